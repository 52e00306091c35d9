package jobs

import "github.com/sluice-ai/sluice/internal/openai"

// tokens is the prompt plus completion tokens the result's usage reports,
// or -1 when it reports none (the tenant's reservation then stands).
func (r *Result) tokens() int64 {
	if r == nil || len(r.Body) == 0 {
		return -1
	}
	sc := openai.NewUsageScanner(r.Header.Get("Content-Type"))
	_, _ = sc.Write(r.Body)
	u, ok := sc.Usage()
	if !ok {
		return -1
	}
	return u.PromptTokens + u.CompletionTokens
}
