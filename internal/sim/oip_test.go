package sim

import (
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
)

type inferResponse struct {
	ModelName    string `json:"model_name"`
	ModelVersion string `json:"model_version"`
	ID           string `json:"id"`
	Outputs      []struct {
		Name     string    `json:"name"`
		Datatype string    `json:"datatype"`
		Shape    []int     `json:"shape"`
		Data     []float32 `json:"data"`
	} `json:"outputs"`
	Error string `json:"error"`
}

func TestV2Infer(t *testing.T) {
	cfg := fastConfig()
	cfg.Dim = 16
	_, ts := startServer(t, cfg)
	infer := func(path, body string) (int, inferResponse) {
		t.Helper()
		resp, b := post(t, ts.URL+path, body)
		var r inferResponse
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		return resp.StatusCode, r
	}

	code, r := infer("/v2/models/sim-llm/infer", `{"id":"req-1","inputs":[
		{"name":"image","datatype":"FP32","shape":[2,2,3],"data":[[[1,2,3],[4,5,6]],[[7,8,9],[10,11,12]]]},
		{"name":"text","datatype":"BYTES","shape":[3],"data":["a b","c","a b"]},
		{"name":"flags","datatype":"BOOL","shape":[],"data":true}]}`)
	if code != 200 {
		t.Fatalf("status %d: %s", code, r.Error)
	}
	if r.ModelName != "sim-llm" || r.ModelVersion != "1" || r.ID != "req-1" || len(r.Outputs) != 3 {
		t.Fatalf("response %+v", r)
	}
	for i, want := range [][]int{{2, 16}, {3, 16}, {1, 16}} {
		o := r.Outputs[i]
		if o.Name != "OUTPUT"+string(rune('0'+i)) || o.Datatype != "FP32" || len(o.Shape) != 2 || o.Shape[0] != want[0] || o.Shape[1] != want[1] {
			t.Errorf("output %d: %s %s %v, want shape %v", i, o.Name, o.Datatype, o.Shape, want)
		}
		if len(o.Data) != want[0]*want[1] {
			t.Errorf("output %d: %d values for shape %v", i, len(o.Data), want)
		}
		for row := range want[0] {
			var sum float64
			for _, x := range o.Data[row*16 : (row+1)*16] {
				sum += float64(x) * float64(x)
			}
			if math.Abs(sum-1) > 1e-5 {
				t.Errorf("output %d row %d: squared norm %v", i, row, sum)
			}
		}
	}
	text := r.Outputs[1].Data
	if !equalVec(text[0:16], text[32:48]) || equalVec(text[0:16], text[16:32]) {
		t.Errorf("equal rows must share a vector and different rows must not")
	}

	code, again := infer("/v2/models/sim-llm/versions/1/infer", `{"inputs":[{"name":"text","datatype":"BYTES","shape":[3],"data":["a b","c","a b"]}],"outputs":[{"name":"OUTPUT0"}]}`)
	if code != 200 || len(again.Outputs) != 1 || !equalVec(again.Outputs[0].Data, text) {
		t.Errorf("the same tensor through the versioned path: status %d, outputs %+v", code, again.Outputs)
	}
	if again.ID == "" {
		t.Errorf("response without an id")
	}

	bad := []struct {
		name, path, body string
		status           int
	}{
		{"unknown model", "/v2/models/nope/infer", `{"inputs":[]}`, 404},
		{"unknown version", "/v2/models/sim-llm/versions/7/infer", `{"inputs":[]}`, 404},
		{"no inputs", "/v2/models/sim-llm/infer", `{"inputs":[]}`, 400},
		{"malformed", "/v2/models/sim-llm/infer", `{"inputs":`, 400},
		{"shape mismatch", "/v2/models/sim-llm/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[1,2,3]}]}`, 400},
		{"negative shape", "/v2/models/sim-llm/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[-1],"data":[1]}]}`, 400},
		{"wrong element type", "/v2/models/sim-llm/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":["a"]}]}`, 400},
		{"unknown datatype", "/v2/models/sim-llm/infer", `{"inputs":[{"name":"x","datatype":"FP128","shape":[1],"data":[1]}]}`, 400},
		{"unknown output", "/v2/models/sim-llm/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}],"outputs":[{"name":"OUTPUT1"}]}`, 400},
		{"huge batch", "/v2/models/sim-llm/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1000000000000,0],"data":[]}]}`, 400},
	}
	for _, tc := range bad {
		code, r := infer(tc.path, tc.body)
		if code != tc.status || r.Error == "" {
			t.Errorf("%s: status %d error %q, want %d", tc.name, code, r.Error, tc.status)
		}
	}
}

func TestV2Metadata(t *testing.T) {
	_, ts := startServer(t, fastConfig())
	for _, tc := range []struct {
		path   string
		status int
		has    string
	}{
		{"/v2/health/live", 200, ""},
		{"/v2/health/ready", 200, ""},
		{"/v2/models/sim-llm/ready", 200, ""},
		{"/v2/models/sim-llm/versions/1/ready", 200, ""},
		{"/v2/models/nope/ready", 404, `"error"`},
		{"/v2/models/sim-llm", 200, `"versions":["1"]`},
		{"/v2/models/sim-llm/versions/1", 200, `"name":"sim-llm"`},
		{"/v2/models/sim-llm/versions/2", 404, `"error"`},
	} {
		resp, b := call(t, http.MethodGet, ts.URL+tc.path, "")
		if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.has) {
			t.Errorf("GET %s: %d %s, want %d containing %s", tc.path, resp.StatusCode, b, tc.status, tc.has)
		}
		if resp.Header.Get(InstanceHeader) != "sim-test" {
			t.Errorf("GET %s without %s", tc.path, InstanceHeader)
		}
	}
}

func TestOutputIndex(t *testing.T) {
	for name, want := range map[string]int{
		"OUTPUT0": 0, "OUTPUT12": 12, "OUTPUT": -1, "OUTPUT01": -1, "OUTPUT-1": -1, "output0": -1, "OUTPUTx": -1,
	} {
		if got := outputIndex(name); got != want {
			t.Errorf("outputIndex(%q) = %d, want %d", name, got, want)
		}
	}
}
