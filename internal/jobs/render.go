package jobs

import (
	"encoding/base64"
	"encoding/json"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// apiTime is a timestamp as the API shows it: RFC 3339 in UTC with
// milliseconds.
type apiTime time.Time

func (t apiTime) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Time(t).UTC().Format("2006-01-02T15:04:05.000Z07:00") + `"`), nil
}

func optTime(t time.Time) *apiTime {
	if t.IsZero() {
		return nil
	}
	a := apiTime(t)
	return &a
}

// jobSummary is a job as GET /v1/jobs lists it: the fields of SPEC section
// 6 without the result.
type jobSummary struct {
	ID         string   `json:"id"`
	Status     Status   `json:"status"`
	Attempts   int      `json:"attempts"`
	CreatedAt  apiTime  `json:"created_at"`
	StartedAt  *apiTime `json:"started_at"`
	FinishedAt *apiTime `json:"finished_at"`
	Error      *string  `json:"error"`
}

// jobDetail is a job as GET /v1/jobs/{id} returns it.
type jobDetail struct {
	jobSummary
	Result *resultView `json:"result"`
}

// resultView is a captured response: the body is inlined as JSON when the
// response is JSON, else as a string; a body that is not UTF-8 is base64
// with body_encoding "base64".
type resultView struct {
	StatusCode   int               `json:"status_code"`
	Headers      map[string]string `json:"headers"`
	Body         json.RawMessage   `json:"body"`
	BodyEncoding string            `json:"body_encoding,omitempty"`
}

func summaryOf(j *Job) jobSummary {
	s := jobSummary{
		ID:         j.ID,
		Status:     j.Status,
		Attempts:   j.Attempts,
		CreatedAt:  apiTime(j.CreatedAt),
		StartedAt:  optTime(j.StartedAt),
		FinishedAt: optTime(j.FinishedAt),
	}
	if j.Error != "" {
		e := j.Error
		s.Error = &e
	}
	return s
}

func detailOf(j *Job) jobDetail {
	d := jobDetail{jobSummary: summaryOf(j)}
	if j.Result != nil && j.Status.Final() {
		d.Result = viewResult(j.Result)
	}
	return d
}

func viewResult(r *Result) *resultView {
	v := &resultView{StatusCode: r.StatusCode, Headers: make(map[string]string, len(r.Header))}
	for k, vs := range r.Header {
		v.Headers[strings.ToLower(k)] = strings.Join(vs, ", ")
	}
	switch {
	case isJSON(r.Header.Get("Content-Type")) && json.Valid(r.Body):
		v.Body = json.RawMessage(r.Body)
	case utf8.Valid(r.Body):
		v.Body, _ = json.Marshal(string(r.Body))
	default:
		v.Body, _ = json.Marshal(base64.StdEncoding.EncodeToString(r.Body))
		v.BodyEncoding = "base64"
	}
	return v
}

// isJSON reports whether a content type is application/json or a +json
// type.
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
