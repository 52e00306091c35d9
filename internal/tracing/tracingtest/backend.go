package tracingtest

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// BackendService is the service.name of the spans Backend exports.
const BackendService = "backend"

// Backend wraps h as an inference server instrumented with OpenTelemetry
// would be: each request becomes a server span of service "backend" that
// continues the trace of the request's traceparent, exported synchronously
// to httpEndpoint (a Receiver's HTTPEndpoint). Use it behind httptest to
// check that a gateway's attempt span is the backend's parent.
func Backend(t testing.TB, httpEndpoint string, h http.Handler) http.Handler {
	t.Helper()
	u, err := url.Parse(httpEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpoint(u.Host), otlptracehttp.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", BackendService))),
	)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tp.Shutdown(ctx)
	})
	tracer := tp.Tracer("tracingtest")
	prop := propagation.TraceContext{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, r.Method+" "+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}
