package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
)

// The Open Inference Protocol v2 (KServe, Triton) REST endpoints.
//
// Every served model has one version, "1", and behaves as an encoder: each
// input tensor INPUT<i> is read as a batch along its first dimension (a
// scalar is a batch of one), and output OUTPUT<i> is FP32 [batch, Dim]
// holding the deterministic unit vector of each batch row. Inputs may be
// BYTES, BOOL or any numeric datatype, with flat or nested JSON data; the
// binary tensor extension is not supported. The request costs one prefill
// over its input tokens: the words of each BYTES element (at least one) plus
// one per other element. Errors use the protocol's {"error": "..."} shape.

const modelVersion = "1"

func (s *Server) routesV2(mux *http.ServeMux) {
	mux.HandleFunc("GET /v2/health/live", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("GET /v2/health/ready", func(w http.ResponseWriter, _ *http.Request) {
		if ok, _ := s.ready(); !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	for _, prefix := range []string{"/v2/models/{name}", "/v2/models/{name}/versions/{version}"} {
		mux.HandleFunc("GET "+prefix, s.handleV2Metadata)
		mux.HandleFunc("GET "+prefix+"/ready", s.handleV2ModelReady)
		mux.HandleFunc("POST "+prefix+"/infer", s.handleV2Infer)
	}
}

// v2Model resolves the model (and version, if given) of a v2 path.
func (s *Server) v2Model(r *http.Request) (string, error) {
	name := r.PathValue("name")
	m, ok := s.model(name)
	if !ok || name == "" {
		return "", fmt.Errorf("model %q not found", name)
	}
	if v := r.PathValue("version"); v != "" && v != modelVersion {
		return "", fmt.Errorf("version %q of model %q not found; it has version %q", v, name, modelVersion)
	}
	return m, nil
}

func writeV2Error(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, struct {
		Error string `json:"error"`
	}{msg})
}

type v2Tensor struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

func (s *Server) handleV2Metadata(w http.ResponseWriter, r *http.Request) {
	m, err := s.v2Model(r)
	if err != nil {
		writeV2Error(w, http.StatusNotFound, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Name     string     `json:"name"`
		Versions []string   `json:"versions"`
		Platform string     `json:"platform"`
		Inputs   []v2Tensor `json:"inputs"`
		Outputs  []v2Tensor `json:"outputs"`
	}{
		Name:     m,
		Versions: []string{modelVersion},
		Platform: "sluice-sim",
		Inputs:   []v2Tensor{{Name: "INPUT0", Datatype: "BYTES", Shape: []int64{-1}}},
		Outputs:  []v2Tensor{{Name: "OUTPUT0", Datatype: "FP32", Shape: []int64{-1, int64(s.cfg.Dim)}}},
	})
}

func (s *Server) handleV2ModelReady(w http.ResponseWriter, r *http.Request) {
	if _, err := s.v2Model(r); err != nil {
		writeV2Error(w, http.StatusNotFound, err.Error())
		return
	}
	if ok, _ := s.ready(); !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}

type inferRequest struct {
	ID      string       `json:"id"`
	Inputs  []inferInput `json:"inputs"`
	Outputs []struct {
		Name string `json:"name"`
	} `json:"outputs"`
}

type inferInput struct {
	Name     string          `json:"name"`
	Shape    []int64         `json:"shape"`
	Datatype string          `json:"datatype"`
	Data     json.RawMessage `json:"data"`
}

// inferJob is a validated v2 request: for each input, its batch size and
// one hash per batch row.
type inferJob struct {
	id     string
	rows   [][]uint64
	tokens int
	// outputs are the indexes of the inputs whose outputs are returned, in
	// order.
	outputs []int
}

func (s *Server) handleV2Infer(w http.ResponseWriter, r *http.Request) {
	model, err := s.v2Model(r)
	if err != nil {
		writeV2Error(w, http.StatusNotFound, err.Error())
		return
	}
	if ok, left := s.ready(); !ok {
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(left.Seconds())), 10))
		writeV2Error(w, http.StatusServiceUnavailable, "the model is still loading (--startup-delay)")
		return
	}
	if r.Header.Get("Inference-Header-Content-Length") != "" {
		writeV2Error(w, http.StatusBadRequest, "the binary tensor data extension is not supported")
		return
	}
	p := getBuf()
	buf, err := s.readBody(r, *p)
	if err != nil {
		putBuf(p, buf)
		status := http.StatusBadRequest
		if errors.Is(err, errBodyTooLarge) {
			status = http.StatusRequestEntityTooLarge
		}
		writeV2Error(w, status, err.Error())
		return
	}
	job, err := parseInfer(model, buf, s.cfg.Dim)
	if err != nil {
		putBuf(p, buf)
		writeV2Error(w, http.StatusBadRequest, err.Error())
		return
	}
	if s.fail() {
		putBuf(p, buf)
		writeV2Error(w, http.StatusInternalServerError, "simulated server error (--error-rate)")
		return
	}
	t, err := s.engine.Encode(r.Context(), job.tokens)
	s.metrics.encoded(job.tokens, t, err == nil)
	if err != nil {
		putBuf(p, buf)
		writeV2Error(w, http.StatusServiceUnavailable, "the request was cancelled before it finished")
		return
	}
	if job.id == "" {
		job.id = s.newID("infer-")
	}
	b := appendInferResponse(buf[:0], model, &job, make([]float32, s.cfg.Dim))
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	_, _ = w.Write(b)
	putBuf(p, b)
}

// parseInfer decodes and validates a v2 infer request body for model.
func parseInfer(model string, body []byte, dim int) (inferJob, error) {
	var req inferRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return inferJob{}, fmt.Errorf("invalid JSON body: %w", err)
	}
	if len(req.Inputs) == 0 {
		return inferJob{}, errors.New("inputs must not be empty")
	}
	job := inferJob{id: req.ID, rows: make([][]uint64, len(req.Inputs))}
	floats := 0
	for i := range req.Inputs {
		rows, tokens, err := tensorRows(model, &req.Inputs[i])
		if err != nil {
			return inferJob{}, fmt.Errorf("input %q: %w", req.Inputs[i].Name, err)
		}
		job.rows[i] = rows
		job.tokens += tokens
		floats += len(rows) * dim
		if floats > maxOutputFloats {
			return inferJob{}, errors.New("the outputs would be larger than the simulator answers at once")
		}
	}
	job.tokens = max(job.tokens, 1)
	if len(req.Outputs) == 0 {
		for i := range req.Inputs {
			job.outputs = append(job.outputs, i)
		}
		return job, nil
	}
	for _, o := range req.Outputs {
		i := outputIndex(o.Name)
		if i < 0 || i >= len(req.Inputs) {
			return inferJob{}, fmt.Errorf("unknown output %q: with %d inputs the outputs are OUTPUT0..OUTPUT%d", o.Name, len(req.Inputs), len(req.Inputs)-1)
		}
		job.outputs = append(job.outputs, i)
	}
	return job, nil
}

// outputIndex returns i for "OUTPUT<i>", else -1.
func outputIndex(name string) int {
	const p = "OUTPUT"
	if len(name) <= len(p) || name[:len(p)] != p {
		return -1
	}
	i, err := strconv.Atoi(name[len(p):])
	if err != nil || i < 0 || strconv.Itoa(i) != name[len(p):] {
		return -1
	}
	return i
}

// elemKind is what JSON values a datatype's data holds.
type elemKind uint8

const (
	kindNumber elemKind = iota
	kindString
	kindBool
)

var datatypes = map[string]elemKind{
	"BYTES": kindString, "BOOL": kindBool,
	"INT8": kindNumber, "INT16": kindNumber, "INT32": kindNumber, "INT64": kindNumber,
	"UINT8": kindNumber, "UINT16": kindNumber, "UINT32": kindNumber, "UINT64": kindNumber,
	"FP16": kindNumber, "BF16": kindNumber, "FP32": kindNumber, "FP64": kindNumber,
}

// tensorRows checks an input tensor against its shape and datatype and
// returns the hash of each batch row and the tensor's token cost.
func tensorRows(model string, in *inferInput) ([]uint64, int, error) {
	kind, ok := datatypes[in.Datatype]
	if !ok {
		return nil, 0, fmt.Errorf("unsupported datatype %q", in.Datatype)
	}
	if len(bytes.TrimSpace(in.Data)) == 0 {
		return nil, 0, errors.New("data is required")
	}
	var data any
	if err := json.Unmarshal(in.Data, &data); err != nil {
		return nil, 0, fmt.Errorf("data: %w", err)
	}
	var flat []any
	flat = flatten(flat, data)

	if err := checkShape(in.Shape, len(flat)); err != nil {
		return nil, 0, err
	}
	batch := 1
	if len(in.Shape) > 0 {
		batch = int(in.Shape[0])
	}
	if batch > maxOutputFloats {
		return nil, 0, fmt.Errorf("batch of %d is more than the simulator answers at once", batch)
	}
	per := 0
	if batch > 0 {
		per = len(flat) / batch
	}
	rows := make([]uint64, batch)
	tokens := 0
	for r := range rows {
		h := newHasher()
		h.string(model)
		h.sep()
		h.string(in.Datatype)
		h.sep()
		for _, v := range flat[r*per : (r+1)*per] {
			switch x := v.(type) {
			case float64:
				if kind != kindNumber {
					return nil, 0, fmt.Errorf("datatype %s holds no numbers, got %v", in.Datatype, x)
				}
				h.uint64(math.Float64bits(x))
				tokens++
			case string:
				if kind != kindString {
					return nil, 0, fmt.Errorf("datatype %s holds no strings, got %q", in.Datatype, x)
				}
				h.string(x)
				h.sep()
				tokens += max(countWords(x), 1)
			case bool:
				if kind != kindBool {
					return nil, 0, fmt.Errorf("datatype %s holds no booleans, got %v", in.Datatype, x)
				}
				if x {
					h.byte(1)
				} else {
					h.byte(0)
				}
				tokens++
			default:
				return nil, 0, fmt.Errorf("data holds %v, which is no tensor element", x)
			}
		}
		rows[r] = h.sum()
	}
	return rows, tokens, nil
}

// checkShape reports whether shape holds exactly n elements.
func checkShape(shape []int64, n int) error {
	elems := int64(1)
	for _, d := range shape {
		if d < 0 {
			return fmt.Errorf("shape %v has a negative dimension", shape)
		}
		if d == 0 {
			elems = 0
		}
	}
	for _, d := range shape {
		if elems == 0 {
			break
		}
		if elems > int64(n)/d {
			return fmt.Errorf("shape %v holds more than the %d elements given", shape, n)
		}
		elems *= d
	}
	if elems != int64(n) {
		return fmt.Errorf("shape %v holds %d elements, data has %d", shape, elems, n)
	}
	return nil
}

// flatten appends the leaves of nested JSON arrays in row-major order.
func flatten(dst []any, v any) []any {
	if a, ok := v.([]any); ok {
		for _, e := range a {
			dst = flatten(dst, e)
		}
		return dst
	}
	return append(dst, v)
}

// appendInferResponse appends the v2 response of job; vec is scratch of the
// output dimension.
func appendInferResponse(b []byte, model string, job *inferJob, vec []float32) []byte {
	b = append(b, `{"model_name":`...)
	b = appendJSONString(b, model)
	b = append(b, `,"model_version":"`+modelVersion+`","id":`...)
	b = appendJSONString(b, job.id)
	b = append(b, `,"outputs":[`...)
	for k, i := range job.outputs {
		if k > 0 {
			b = append(b, ',')
		}
		rows := job.rows[i]
		b = append(b, `{"name":"OUTPUT`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `","datatype":"FP32","shape":[`...)
		b = strconv.AppendInt(b, int64(len(rows)), 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, int64(len(vec)), 10)
		b = append(b, `],"data":[`...)
		for r, seed := range rows {
			if r > 0 {
				b = append(b, ',')
			}
			unitVector(vec, seed)
			for j, f := range vec {
				if j > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendFloat(b, float64(f), 'g', -1, 32)
			}
		}
		b = append(b, "]}"...)
	}
	return append(b, "]}\n"...)
}
