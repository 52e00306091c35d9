package kube

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/sluice-ai/sluice/internal/config"
)

// The chart in deploy/helm/sluice is rendered here with Go's text/template
// and the few template functions it uses, implemented as Helm documents
// them (include, nindent, quote, toYaml, toJson, default, sha256sum), so the
// test needs neither the helm binary nor Helm's Go module and its
// dependency tree. The chart must keep to these functions; a template that
// calls another fails to parse here.

// renderChart renders the chart for release in namespace with its default
// values changed by edit, and decodes each object strictly; kinds the
// client's scheme does not know (ServiceMonitor) come back unstructured.
func renderChart(t *testing.T, release, namespace string, edit func(values map[string]any)) []client.Object {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "deploy", "helm", "sluice")
	var values, chart map[string]any
	for file, v := range map[string]*map[string]any{"values.yaml": &values, "Chart.yaml": &chart} {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	if edit != nil {
		edit(values)
	}
	tpl := template.New("chart").Option("missingkey=zero")
	tpl.Funcs(template.FuncMap{
		"include": func(name string, data any) (string, error) {
			var b bytes.Buffer
			err := tpl.ExecuteTemplate(&b, name, data)
			return b.String(), err
		},
		"nindent": func(n int, s string) string {
			pad := strings.Repeat(" ", n)
			return "\n" + pad + strings.ReplaceAll(s, "\n", "\n"+pad)
		},
		"quote": func(v any) string { return fmt.Sprintf("%q", fmt.Sprint(v)) },
		"toYaml": func(v any) (string, error) {
			b, err := yaml.Marshal(v)
			return strings.TrimSuffix(string(b), "\n"), err
		},
		"toJson": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
		"default": func(d any, given ...any) any {
			if len(given) == 0 || given[0] == nil || given[0] == "" || given[0] == false {
				return d
			}
			return given[0]
		},
		"sha256sum": func(s string) string {
			sum := sha256.Sum256([]byte(s))
			return hex.EncodeToString(sum[:])
		},
	})
	files, err := filepath.Glob(filepath.Join(dir, "templates", "*"))
	if err != nil || len(files) < 5 {
		t.Fatalf("chart templates: %v %v", files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tpl.New(filepath.Base(f)).Parse(string(b)); err != nil {
			t.Fatalf("template %s: %v", filepath.Base(f), err)
		}
	}
	data := map[string]any{
		"Values":  values,
		"Release": map[string]any{"Name": release, "Namespace": namespace, "Service": "Helm"},
		"Chart":   map[string]any{"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
	}
	decoder := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var objs []client.Object
	for _, f := range files {
		name := filepath.Base(f)
		if strings.HasPrefix(name, "_") {
			continue
		}
		var out bytes.Buffer
		if err := tpl.ExecuteTemplate(&out, name, data); err != nil {
			t.Fatalf("render %s: %v", name, err)
		}
		for i, doc := range strings.Split(out.String(), "\n---\n") {
			if len(bytes.TrimSpace(stripComments([]byte(doc)))) == 0 {
				continue
			}
			obj, _, err := decoder.Decode([]byte(doc), nil, nil)
			if runtime.IsNotRegisteredError(err) {
				u := &unstructured.Unstructured{}
				if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
					t.Fatalf("%s: document %d: %v\n%s", name, i, err, doc)
				}
				objs = append(objs, u)
				continue
			}
			if err != nil {
				t.Fatalf("%s: document %d: %v\n%s", name, i, err, doc)
			}
			objs = append(objs, obj.(client.Object))
		}
	}
	return objs
}

func objectKey(o client.Object) string {
	return fmt.Sprintf("%T/%s", o, o.GetName())
}

// TestHelmChartMatchesKustomize: with its defaults and the release name
// sluice, the chart renders what deploy/ holds, object for object (the
// Namespace aside: helm install --create-namespace makes it). Differences
// that only the chart can express (an image tag and pull policy, a config
// hash that rolls pods) are set aside; the embedded sluice.yaml is compared
// as parsed config, since the chart writes it from values without comments.
func TestHelmChartMatchesKustomize(t *testing.T) {
	chart := renderChart(t, "sluice", "sluice", nil)
	var kust []client.Object
	for _, o := range deployObjects(t) {
		if _, ok := o.(*corev1.Namespace); !ok {
			kust = append(kust, o)
		}
	}
	keys := func(objs []client.Object) []string {
		var out []string
		for _, o := range objs {
			out = append(out, objectKey(o))
		}
		return slices.Sorted(slices.Values(out))
	}
	if got, want := keys(chart), keys(kust); !slices.Equal(got, want) {
		t.Fatalf("chart renders %v, deploy/ holds %v", got, want)
	}
	t.Setenv("POD_NAMESPACE", "sluice")
	for _, k := range kust {
		var c client.Object
		for _, o := range chart {
			if objectKey(o) == objectKey(k) {
				c = o
			}
		}
		if cm, ok := c.(*corev1.ConfigMap); ok {
			kc := k.(*corev1.ConfigMap)
			got, err := config.Parse("chart:sluice.yaml", []byte(cm.Data["sluice.yaml"]))
			if err != nil {
				t.Fatalf("the chart's sluice.yaml: %v\n%s", err, cm.Data["sluice.yaml"])
			}
			want, err := config.Parse("deploy:sluice.yaml", []byte(kc.Data["sluice.yaml"]))
			if err != nil {
				t.Fatal(err)
			}
			got.Path, want.Path = "", ""
			if !reflect.DeepEqual(got.Pools, want.Pools) || got.Listen != want.Listen || got.Admin != want.Admin || got.Limits != want.Limits || got.DataDir != want.DataDir || got.Log != want.Log {
				t.Errorf("the chart's sluice.yaml differs from deploy/'s:\n%s", cm.Data["sluice.yaml"])
			}
			continue
		}
		if d, ok := c.(*appsv1.Deployment); ok {
			d = d.DeepCopy()
			d.Spec.Template.Annotations = nil
			for i := range d.Spec.Template.Spec.Containers {
				ct := &d.Spec.Template.Spec.Containers[i]
				if ct.Image != "ghcr.io/sluice-ai/sluice:dev" || ct.ImagePullPolicy != corev1.PullIfNotPresent {
					t.Errorf("%s image %s (%s), want ghcr.io/sluice-ai/sluice:dev, IfNotPresent", d.Name, ct.Image, ct.ImagePullPolicy)
				}
				ct.Image, ct.ImagePullPolicy = "ghcr.io/sluice-ai/sluice", ""
			}
			c = d
		}
		if !reflect.DeepEqual(c, k) {
			cy, _ := yaml.Marshal(c)
			ky, _ := yaml.Marshal(k)
			t.Errorf("%s differs\n--- chart\n%s--- deploy/\n%s", objectKey(k), cy, ky)
		}
	}
}

// TestHelmChartApplies renders the chart with values a user would change
// (another release name and namespace, two gateway replicas, the model
// renamed, a ServiceMonitor) and applies it to the real API server: every
// object is accepted, and the Role it renders lets the gateway scale its
// own model and hold its Lease, and nothing else.
func TestHelmChartApplies(t *testing.T) {
	const ns, release = "helm-edge", "edge"
	objs := renderChart(t, release, ns, func(v map[string]any) {
		v["replicaCount"] = 2
		v["serviceMonitor"] = map[string]any{"enabled": true, "interval": "15s", "labels": map[string]any{"release": "prometheus"}}
		v["model"].(map[string]any)["name"] = "vllm"
		pool := v["config"].(map[string]any)["pools"].([]any)[0].(map[string]any)
		pool["kubernetes"].(map[string]any)["service"] = "vllm"
		pool["kubernetes"].(map[string]any)["scale_target"] = map[string]any{"kind": "Deployment", "name": "vllm"}
	})
	for _, want := range []string{"*v1.Deployment/edge", "*v1.Deployment/vllm", "*v1.PodDisruptionBudget/edge", "*v1.Service/edge-admin", "*unstructured.Unstructured/edge", "*v1.Role/edge"} {
		found := false
		for _, o := range objs {
			found = found || objectKey(o) == want
		}
		if !found {
			t.Errorf("the chart renders no %s", want)
		}
	}
	if d := find[*appsv1.Deployment](t, objs, release); *d.Spec.Replicas != 2 {
		t.Errorf("gateway replicas %d, want 2", *d.Spec.Replicas)
	}

	apiCfg := apiServer(t)
	sch := runtime.NewScheme()
	if err := scheme.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(apiCfg, client.Options{Scheme: sch})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	installServiceMonitorCRD(t, admin)
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if err := admin.Create(ctx, o.DeepCopyObject().(client.Object)); err != nil {
			t.Fatalf("%s: %v", objectKey(o), err)
		}
	}
	sm := &unstructured.Unstructured{}
	sm.SetAPIVersion("monitoring.coreos.com/v1")
	sm.SetKind("ServiceMonitor")
	if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: release}, sm); err != nil {
		t.Fatalf("the ServiceMonitor: %v", err)
	}
	if port, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints"); len(port) != 1 {
		t.Errorf("ServiceMonitor endpoints %v", port)
	}

	asGateway := rest.CopyConfig(apiCfg)
	asGateway.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":" + release,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	gateway := newClient(t, asGateway)
	applySlice(t, newClient(t, apiCfg), ns, "vllm", testSlice("vllm-abc", discoveryv1.AddressTypeIPv4, slicePorts("http=8000"), ep{"10.4.0.1", "vllm-1", "ready"}))
	work, err := NewWorkload(gateway, ns, config.ScaleTarget{Kind: KindDeployment, Name: "vllm"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := work.getScale(ctx); err != nil {
		t.Errorf("reading its model's scale as the gateway: %v", err)
	}
	if _, err := gateway.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("listing EndpointSlices as the gateway: %v", err)
	}
	lease := LeaseName("chat")
	if _, err := gateway.CoordinationV1().Leases(ns).Get(ctx, lease, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("getting its Lease %s as the gateway = %v, want not found (allowed, not yet created)", lease, err)
	}
	createWorkload(t, newClient(t, apiCfg), ns, KindDeployment, "other", 1)
	other, err := NewWorkload(gateway, ns, config.ScaleTarget{Name: "other"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.getScale(ctx); !apierrors.IsForbidden(err) {
		t.Errorf("reading another Deployment's scale = %v, want forbidden", err)
	}
	if _, err := gateway.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing secrets as the gateway = %v, want forbidden", err)
	}
}

// installServiceMonitorCRD creates a ServiceMonitor CRD that accepts any
// spec (the Prometheus Operator's own is thousands of lines) and waits until
// it serves.
func installServiceMonitorCRD(t *testing.T, c client.Client) {
	t.Helper()
	preserve := true
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "servicemonitors.monitoring.coreos.com"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "monitoring.coreos.com",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "servicemonitors", Singular: "servicemonitor", Kind: "ServiceMonitor", ListKind: "ServiceMonitorList"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", XPreserveUnknownFields: &preserve,
				}},
			}},
		},
	}
	ctx := context.Background()
	if err := c.Create(ctx, crd); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got apiextensionsv1.CustomResourceDefinition
		if err := c.Get(ctx, client.ObjectKey{Name: crd.Name}, &got); err == nil {
			for _, cond := range got.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the ServiceMonitor CRD was not established within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
