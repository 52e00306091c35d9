package jobs

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSignWebhookStandardVector(t *testing.T) {
	// The test vector published with the Standard Webhooks reference
	// implementations: receivers' libraries must accept what we send.
	key, err := ParseWebhookSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := SignWebhook(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
}

func TestParseWebhookSecret(t *testing.T) {
	tests := []struct {
		in      string
		want    []byte
		wantErr bool
	}{
		{in: "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123")), want: []byte("0123456789abcdef0123")},
		{in: "plain secret", want: []byte("plain secret")},
		{in: "whsec_!!!", wantErr: true},
		{in: "whsec_", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParseWebhookSecret(tc.in)
		if (err != nil) != tc.wantErr || !bytes.Equal(got, tc.want) {
			t.Errorf("ParseWebhookSecret(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestCodecRoundTrip(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 8000000, time.UTC)
	tests := []*Job{
		{ID: "job_0123456789abcdef0123456789abcdef", Status: StatusQueued, Priority: PriorityLow, CreatedAt: now,
			Request: Request{Method: "POST", Path: "/v1/embeddings", Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"input":"x"}`)}},
		{ID: "job_0123456789abcdef0123456789abcdef", Tenant: "team-a", Pool: "chat", Status: StatusSucceeded, Attempts: 2,
			CreatedAt: now, StartedAt: now.Add(time.Second), FinishedAt: now.Add(2 * time.Second), RunID: "r",
			Request:     Request{Method: "GET", Path: "/v1/models"},
			Result:      &Result{StatusCode: 200, Header: http.Header{"X-A": {"1", "2"}}, Body: []byte("\x00\xffbinary")},
			CallbackURL: "https://example.com/hook", IdempotencyKey: "k", CancelRequested: true, CallbackAttempts: 3},
		{ID: "job_0123456789abcdef0123456789abcdef", Status: StatusFailed, Result: &Result{StatusCode: 502}},
	}
	for _, in := range tests {
		b, err := in.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var out Job
		if err := out.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(in)
		got, _ := json.Marshal(&out)
		if !bytes.Equal(got, want) || !bytes.Equal(out.Request.Body, in.Request.Body) ||
			(in.Result != nil && !bytes.Equal(out.Result.Body, in.Result.Body)) {
			t.Fatalf("round trip:\n got %s %q\nwant %s %q", got, out.Request.Body, want, in.Request.Body)
		}
		for i := range b {
			var bad Job
			if bad.UnmarshalBinary(b[:i]) == nil {
				t.Fatalf("a truncated encoding (%d of %d bytes) decoded", i, len(b))
			}
		}
	}
}

// TestCodecReadsVersion1 decodes a record written before the binary
// encoding: fields as JSON.
func TestCodecReadsVersion1(t *testing.T) {
	in := &Job{ID: "job_0123456789abcdef0123456789abcdef", Tenant: "t", Status: StatusSucceeded, Attempts: 1,
		CreatedAt: time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC),
		Request:   Request{Method: "POST", Path: "/v1/chat/completions", Header: http.Header{"A": {"b"}}, Body: []byte("req")},
		Result:    &Result{StatusCode: 200, Body: []byte("res")}}
	meta, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	b := append([]byte{codecV1}, binary.AppendUvarint(nil, uint64(len(meta)))...)
	b = append(b, meta...)
	b = append(append(b, 3), "req"...)
	b = append(append(b, 3), "res"...)
	var out Job
	if err := out.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(&out)
	if !bytes.Equal(got, meta) || string(out.Request.Body) != "req" || string(out.Result.Body) != "res" {
		t.Fatalf("decoded %s %q %q; want %s", got, out.Request.Body, out.Result.Body, meta)
	}
}

func BenchmarkCodec(b *testing.B) {
	j := &Job{ID: "job_0123456789abcdef0123456789abcdef", Tenant: "team-a", Pool: "chat", Priority: PriorityNormal,
		Status: StatusSucceeded, Attempts: 1, CreatedAt: time.Now(), StartedAt: time.Now(), FinishedAt: time.Now(), RunID: "r",
		Request: Request{Method: "POST", Path: "/v1/chat/completions", Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"model":"m"}`)},
		Result:  &Result{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"id":"x"}`)}}
	b.ReportAllocs()
	for b.Loop() {
		enc, err := j.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		var out Job
		if err := out.UnmarshalBinary(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzUnmarshalBinary(f *testing.F) {
	j := &Job{ID: "job_0123456789abcdef0123456789abcdef", Request: Request{Body: []byte("body")}, Result: &Result{Body: []byte("res")}}
	b, _ := j.MarshalBinary()
	f.Add(b)
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add([]byte{2, 0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, data []byte) {
		var j Job
		if j.UnmarshalBinary(data) != nil {
			return
		}
		// What decodes re-encodes to something that decodes the same.
		b, err := j.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var k Job
		if err := k.UnmarshalBinary(b); err != nil {
			t.Fatalf("re-encoding does not decode: %v", err)
		}
	})
}

func TestPicker(t *testing.T) {
	// Simulate a dispatcher taking one job at a time from queues with the
	// given backlogs; record the order of priorities served.
	run := func(backlog map[Priority]int, n int) []Priority {
		var p picker
		var out []Priority
		take := func(pr Priority) bool {
			got := 0
			if backlog[pr] > 0 {
				backlog[pr]--
				got = 1
			}
			p.took(pr, got)
			if got == 1 {
				out = append(out, pr)
			}
			return got == 1
		}
		for len(out) < n {
			served := false
			for _, pr := range p.due() {
				if served = take(pr); served {
					break
				}
			}
			for _, pr := range Priorities {
				if served || take(pr) {
					break
				}
			}
		}
		return out
	}
	count := func(ps []Priority, want Priority) (n int) {
		for _, p := range ps {
			if p == want {
				n++
			}
		}
		return n
	}
	tests := []struct {
		name    string
		backlog map[Priority]int
		n       int
		check   func([]Priority) bool
	}{
		{"strict when short", map[Priority]int{PriorityLow: 1, PriorityNormal: 1, PriorityHigh: 1}, 3,
			func(o []Priority) bool { return o[0] == PriorityHigh && o[1] == PriorityNormal && o[2] == PriorityLow }},
		{"low gets a turn under a flood of high", map[Priority]int{PriorityHigh: 100, PriorityLow: 100}, 90,
			func(o []Priority) bool { return count(o, PriorityLow) == 10 && o[starvationLimit] == PriorityLow }},
		{"everyone served under full load", map[Priority]int{PriorityHigh: 1000, PriorityNormal: 1000, PriorityLow: 1000}, 1000,
			func(o []Priority) bool {
				return count(o, PriorityNormal) >= 1000/(starvationLimit+1)/2 && count(o, PriorityLow) >= 1000/(starvationLimit+1)/2 &&
					count(o, PriorityHigh) > count(o, PriorityNormal)+count(o, PriorityLow)
			}},
		{"normal before low", map[Priority]int{PriorityNormal: 5, PriorityLow: 5}, 6,
			func(o []Priority) bool { return count(o[:5], PriorityNormal) == 5 }},
	}
	for _, tc := range tests {
		if got := run(tc.backlog, tc.n); !tc.check(got) {
			t.Errorf("%s: order %v", tc.name, got)
		}
	}
}

func TestCapture(t *testing.T) {
	c := newCapture(10)
	c.Header().Set("Content-Type", "text/event-stream")
	c.Header().Set("Connection", "keep-alive")
	c.WriteHeader(http.StatusEarlyHints) // informational: ignored
	c.WriteHeader(http.StatusAccepted)
	c.Header().Set("X-Late", "ignored")
	c.WriteHeader(http.StatusTeapot) // second call: ignored
	if _, err := c.Write([]byte("data: 1\n")); err != nil {
		t.Fatal(err)
	}
	c.Flush()
	if _, err := c.Write([]byte("data: 2\n")); err != errResponseTooLarge {
		t.Fatalf("write past the limit: %v", err)
	}
	if !c.tooLarge {
		t.Fatal("too large not recorded")
	}
	r := newCapture(10).result()
	if r.StatusCode != http.StatusOK || r.Body != nil {
		t.Fatalf("empty response: %+v", r)
	}
	c = newCapture(100)
	c.Header().Set("Content-Type", "text/event-stream")
	c.Header().Set("Transfer-Encoding", "chunked")
	c.Write([]byte("data: a\n\n"))
	c.Write([]byte("data: b\n\n"))
	r = c.result()
	if r.StatusCode != 200 || string(r.Body) != "data: a\n\ndata: b\n\n" || r.Header.Get("Transfer-Encoding") != "" || r.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream capture %+v", r)
	}
}

func TestViewResult(t *testing.T) {
	tests := []struct {
		ct, body, want, enc string
	}{
		{"application/json", `{"a":1}`, `{"a":1}`, ""},
		{"application/problem+json; charset=utf-8", `[1,2]`, `[1,2]`, ""},
		{"application/json", `{broken`, `"{broken"`, ""},
		{"text/event-stream", "data: {}\n\n", `"data: {}\n\n"`, ""},
		{"audio/wav", "\xff\x00", `"/wA="`, "base64"},
		{"", "", `""`, ""},
	}
	for _, tc := range tests {
		v := viewResult(&Result{StatusCode: 200, Header: http.Header{"Content-Type": {tc.ct}}, Body: []byte(tc.body)})
		b, _ := json.Marshal(v.Body)
		if string(b) != tc.want || v.BodyEncoding != tc.enc {
			t.Errorf("%s %q: body %s encoding %q, want %s %q", tc.ct, tc.body, b, v.BodyEncoding, tc.want, tc.enc)
		}
	}
}

func TestRetryableStatus(t *testing.T) {
	for code, want := range map[int]bool{
		200: false, 400: false, 401: false, 404: false, 408: true, 413: false, 422: false, 429: true,
		500: true, 501: false, 502: true, 503: true, 504: true, 505: false, 529: true,
	} {
		if got := retryableStatus(code); got != want {
			t.Errorf("retryableStatus(%d) = %v", code, got)
		}
	}
}

func TestBackoff(t *testing.T) {
	for n := 1; n <= 12; n++ {
		want := min(time.Second<<(n-1), time.Minute)
		for range 50 {
			d := backoff(time.Second, time.Minute, n)
			if d < want/2 || d > want {
				t.Fatalf("retry %d: %s not in [%s, %s]", n, d, want/2, want)
			}
		}
	}
	if backoff(0, time.Minute, 3) != 0 {
		t.Fatal("zero base must not wait")
	}
}

func TestParseWait(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"", 0, false}, {"30s", 30 * time.Second, false}, {"30", 30 * time.Second, false},
		{"1h", MaxWait, false}, {"-1s", 0, true}, {"soon", 0, true}, {"1.5", 0, true},
	}
	for _, tc := range tests {
		got, err := parseWait(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("parseWait(%q) = %s, %v", tc.in, got, err)
		}
	}
}

func FuzzParseWait(f *testing.F) {
	for _, s := range []string{"", "30s", "30", "-1s", "1e9", "9999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseWait(s)
		if err == nil && (d < 0 || d > MaxWait) {
			t.Fatalf("parseWait(%q) = %s outside [0, %s]", s, d, MaxWait)
		}
	})
}

func TestParseSubmission(t *testing.T) {
	tests := []struct {
		in         string
		method, ct string
		body       string
		bad        bool
	}{
		{in: `{"path":"/v1/embeddings","body":{"model":"m"}}`, method: "POST", ct: "application/json", body: `{"model":"m"}`},
		{in: `{"method":"get","path":"/v1/models"}`, method: "GET"},
		{in: `{"path":"/x","body":"plain text","headers":{"content-type":"text/csv"}}`, method: "POST", ct: "text/csv", body: "plain text"},
		{in: `{"path":"/x","body":"héllo"}`, method: "POST", ct: "text/plain; charset=utf-8", body: "héllo"},
		{in: `{"path":"/x","body":[1,2]}`, method: "POST", ct: "application/json", body: `[1,2]`},
		{in: `{"path":"/x","body":null}`, method: "POST"},
		{in: `{"path":"/x","body":42}`, bad: true},
		{in: `{"path":"/x","extra":1}`, bad: true},
		{in: `{"path":"/x"} {}`, bad: true},
		{in: `[]`, bad: true},
		{in: ``, bad: true},
	}
	for _, tc := range tests {
		p, err := parseSubmission([]byte(tc.in))
		if (err != nil) != tc.bad {
			t.Errorf("%s: error %v", tc.in, err)
			continue
		}
		if tc.bad {
			if err.Status != http.StatusBadRequest {
				t.Errorf("%s: status %d", tc.in, err.Status)
			}
			continue
		}
		if p.method != tc.method || p.header.Get("Content-Type") != tc.ct || string(p.body) != tc.body {
			t.Errorf("%s: method %q type %q body %q", tc.in, p.method, p.header.Get("Content-Type"), p.body)
		}
	}
}

func FuzzParseSubmission(f *testing.F) {
	for _, s := range []string{
		`{"path":"/v1/embeddings","body":{"model":"m"}}`,
		`{"method":"GET","path":"/x","headers":{"a":"b"},"priority":"low","callback_url":"http://x"}`,
		`{"body":"\u0000"}`, `{`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := parseSubmission(data)
		if err != nil {
			if err.Status != http.StatusBadRequest || err.Message == "" {
				t.Fatalf("error %+v", err)
			}
			return
		}
		if p.method == "" || p.header == nil {
			t.Fatalf("accepted without method or header: %+v", p)
		}
	})
}

func TestValidID(t *testing.T) {
	id, err := NewID()
	if err != nil || !ValidID(id) {
		t.Fatalf("NewID() = %q, %v", id, err)
	}
	next, _ := NewID()
	if next <= id {
		t.Fatalf("IDs do not sort by creation: %s then %s", id, next)
	}
	for _, bad := range []string{"", "job_", "job_0123456789ABCDEF0123456789abcdef", "job_0123456789abcdef0123456789abcde.", "task_0123456789abcdef0123456789abcd", strings.Repeat("a", 36)} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q)", bad)
		}
	}
}

func TestValidate(t *testing.T) {
	s := &Service{opt: Options{MaxRequestBody: 10}, keep: keptHeaderSet([]string{"X-Session-Id", "authorization"})}
	tests := []struct {
		name string
		req  SubmitRequest
		code int
	}{
		{"bad method", SubmitRequest{Method: "get", Path: "/x"}, 400},
		{"relative path", SubmitRequest{Path: "x"}, 400},
		{"host path", SubmitRequest{Path: "//evil/x"}, 400},
		{"jobs path", SubmitRequest{Path: "/v1/jobs/job_x"}, 400},
		{"too large", SubmitRequest{Path: "/x", Body: make([]byte, 11)}, 413},
		{"bad priority", SubmitRequest{Path: "/x", Priority: "urgent"}, 400},
		{"callback not http", SubmitRequest{Path: "/x", CallbackURL: "ftp://x/y"}, 400},
		{"callback without secret", SubmitRequest{Path: "/x", CallbackURL: "https://x/y"}, 400},
		{"key too long", SubmitRequest{Path: "/x", IdempotencyKey: strings.Repeat("k", 256)}, 400},
		{"key not printable", SubmitRequest{Path: "/x", IdempotencyKey: "a\nb"}, 400},
	}
	for _, tc := range tests {
		if _, err := s.newJobAt(tc.req, time.Now()); err == nil || err.Status != tc.code {
			t.Errorf("%s: %v, want %d", tc.name, err, tc.code)
		}
	}
	j, err := s.newJobAt(SubmitRequest{Path: "/v1/x?y=1", Header: http.Header{
		"Authorization": {"Bearer k"}, "X-Session-Id": {"s"}, "Accept": {"text/event-stream"}, "Cookie": {"c"},
	}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h := j.Request.Header
	if h.Get("Authorization") != "" || h.Get("Cookie") != "" || h.Get("X-Session-Id") != "s" || h.Get("Accept") != "text/event-stream" || h.Get("X-Request-Id") != j.ID {
		t.Fatalf("kept headers %v", h)
	}
	if j.Request.Method != http.MethodPost || j.Priority != PriorityNormal || j.Status != StatusQueued {
		t.Fatalf("defaults: %+v", j)
	}
}
