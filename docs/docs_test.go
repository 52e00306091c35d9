// Package docs holds sluice's user documentation; its test keeps the README
// and docs/*.md true to the code: every relative link reaches a file (and a
// heading, for a #anchor), and every YAML block is a config that sluice
// accepts, unless it says otherwise.
//
// A YAML block says otherwise with an HTML comment on the line before its
// fence, which renders as nothing:
//
//	<!-- fragment -->          part of a sluice config: keys to add to one,
//	                           checked as YAML only
//	<!-- not sluice.yaml -->   another program's YAML (Prometheus rules, a
//	                           Helm values file), checked as YAML only
//
// Kubernetes manifests (apiVersion and kind at the top) need no marker.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/sluice-ai/sluice/internal/config"
)

// Markers for YAML blocks that are not whole sluice configs.
const (
	fragmentMarker = "<!-- fragment -->"
	otherMarker    = "<!-- not sluice.yaml -->"
)

// pages returns the Markdown files the check covers, relative to this
// directory.
func pages(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../README.md")
	if len(files) < 5 {
		t.Fatalf("found only %v", files)
	}
	return files
}

// block is one fenced code block.
type block struct {
	lang   string
	line   int    // of the opening fence, 1-based
	before string // the last non-blank line before the fence
	text   string
}

// parse splits a Markdown file into its fenced code blocks and the prose
// between them (the blocks blanked out, so that line numbers hold).
func parse(src string) (blocks []block, prose string) {
	lines := strings.Split(src, "\n")
	var out []string
	var cur *block
	var body []string
	before := ""
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		if cur == nil {
			if strings.HasPrefix(trimmed, "```") {
				cur = &block{lang: strings.TrimSpace(strings.TrimPrefix(trimmed, "```")), line: i + 1, before: before}
				body = body[:0]
				out = append(out, "")
				continue
			}
			if trimmed != "" {
				before = trimmed
			}
			out = append(out, line)
			continue
		}
		if strings.HasPrefix(trimmed, "```") {
			cur.text = strings.Join(body, "\n") + "\n"
			blocks = append(blocks, *cur)
			cur = nil
			before = ""
		} else {
			body = append(body, line)
		}
		out = append(out, "")
	}
	return blocks, strings.Join(out, "\n")
}

var (
	inlineCode = regexp.MustCompile("`[^`\n]*`")
	linkRE     = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	headingRE  = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*#*\s*$`)
	envRef     = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)
)

// anchors returns the GitHub anchors of a Markdown file's headings.
func anchors(src string) map[string]bool {
	_, prose := parse(src)
	seen := map[string]int{}
	out := map[string]bool{}
	for _, m := range headingRE.FindAllStringSubmatch(prose, -1) {
		a := slug(m[1])
		if n := seen[a]; n > 0 {
			out[a+"-"+strconv.Itoa(n)] = true
		} else {
			out[a] = true
		}
		seen[a]++
	}
	return out
}

// slug is GitHub's heading anchor: lower case, punctuation other than - and
// _ dropped, spaces as hyphens.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestLinks: every relative link in the README and docs/ reaches a file or
// directory of the repository, and its #anchor a heading of that file.
func TestLinks(t *testing.T) {
	checked := 0
	for _, page := range pages(t) {
		src, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		_, prose := parse(string(src))
		for i, line := range strings.Split(prose, "\n") {
			line = inlineCode.ReplaceAllString(line, "")
			for _, m := range linkRE.FindAllStringSubmatch(line, -1) {
				target := m[1]
				checked++
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				path, anchor, _ := strings.Cut(target, "#")
				file := page
				if path != "" {
					file = filepath.Join(filepath.Dir(page), path)
					if _, err := os.Stat(file); err != nil {
						t.Errorf("%s:%d: link %s: no such file", page, i+1, target)
						continue
					}
				}
				if anchor == "" || !strings.HasSuffix(file, ".md") {
					continue
				}
				dst, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				if !anchors(string(dst))[anchor] {
					t.Errorf("%s:%d: link %s: %s has no heading #%s", page, i+1, target, file, anchor)
				}
			}
		}
	}
	if checked < 20 {
		t.Errorf("found %d links; is the link pattern still right?", checked)
	}
}

// TestYAMLBlocks: every YAML block of the README and docs/ is a sluice
// config that loads (the same checks as sluice config validate), or is
// marked as a fragment or another program's YAML and is at least valid
// YAML. ${VAR} references are given a placeholder value.
func TestYAMLBlocks(t *testing.T) {
	checked := 0
	for _, page := range pages(t) {
		src, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		blocks, _ := parse(string(src))
		for _, b := range blocks {
			if b.lang != "yaml" && b.lang != "yml" {
				continue
			}
			at := page + ":" + strconv.Itoa(b.line)
			var doc map[string]any
			if err := yaml.Unmarshal([]byte(b.text), &doc); err != nil {
				t.Errorf("%s: not valid YAML: %v", at, err)
				continue
			}
			_, api := doc["apiVersion"]
			_, kind := doc["kind"]
			switch {
			case b.before == fragmentMarker, b.before == otherMarker, api && kind:
				continue
			}
			for _, m := range envRef.FindAllStringSubmatch(b.text, -1) {
				if _, ok := os.LookupEnv(m[1]); !ok {
					t.Setenv(m[1], "placeholder")
				}
			}
			checked++
			if _, err := config.Parse(at, []byte(b.text)); err != nil {
				t.Errorf("%s: not a valid sluice config (mark a part of one with %s on the line before the fence):\n%v", at, fragmentMarker, err)
			}
		}
	}
	if checked == 0 {
		t.Error("no YAML block was checked as a config")
	}
}
