package bench

import (
	"bytes"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// chatStream is a streamed chat completion of n content chunks, as vLLM
// writes it.
func chatStream(n int) []byte {
	var b bytes.Buffer
	b.WriteString("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"sim-llm\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n")
	for i := range n {
		fmt.Fprintf(&b, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"sim-llm\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" word%d\"},\"finish_reason\":null}]}\n\n", i)
	}
	b.WriteString("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"sim-llm\",\"choices\":[],\"usage\":{\"prompt_tokens\":64,\"completion_tokens\":64,\"total_tokens\":128}}\n\n")
	b.WriteString("data: [DONE]\n\n")
	return b.Bytes()
}

func BenchmarkSSEReader(b *testing.B) {
	stream := chatStream(64)
	r := bytes.NewReader(stream)
	s := newSSEReader(r)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(stream)
		s.reset(r)
		for {
			if _, _, err := s.Next(); err == io.EOF {
				break
			}
		}
	}
}

// BenchmarkReadStream is the client's whole per-response work for a
// 64-token stream: parsing, decoding each chunk and timing it.
func BenchmarkReadStream(b *testing.B) {
	stream := chatStream(64)
	r := bytes.NewReader(stream)
	c := &client{promptWords: 64}
	o := &outcome{}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(stream)
		o.reset()
		if err := c.readStream(r, time.Now(), o); err != nil {
			b.Fatal(err)
		}
	}
	if o.outTokens != 64 || len(o.itl) != 63 {
		b.Fatalf("tokens %d, itl %d", o.outTokens, len(o.itl))
	}
}

func BenchmarkRequestBody(b *testing.B) {
	cfg := Config{Model: "sim-llm", Endpoint: EndpointChat, PromptTokens: 64, MaxTokens: 16, Stream: true, Seed: 1}
	body := newRequestBody(&cfg)
	b.ReportAllocs()
	var i uint64
	for b.Loop() {
		body.forRequest(i)
		i++
	}
}

// BenchmarkRecord records a streamed request's outcome from many goroutines
// at once, as the open loop does.
func BenchmarkRecord(b *testing.B) {
	rec := newRecorder(4, SLO{})
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		o := &outcome{status: 200, latency: 80 * time.Millisecond, ttft: 20 * time.Millisecond, outTokens: 16, inTokens: 64, done: time.Now()}
		for range 15 {
			o.itl = append(o.itl, 4*time.Millisecond)
		}
		for pb.Next() {
			rec.record(next.Add(1), o)
		}
	})
}
