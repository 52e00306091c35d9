package deploy_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// makeVar returns the default of a "NAME ?= value" line of the Makefile.
func makeVar(t *testing.T, makefile, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + `\s*\?=\s*(\S+)\s*$`).FindStringSubmatch(makefile)
	if m == nil {
		t.Fatalf("the Makefile sets no %s ?= default", name)
	}
	return m[1]
}

func readYAMLFile(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestImageTagMatchesMakefile: the image that deploy/, the chart and the
// Dockerfile name is the one `make image` builds by default, so
// `make image && kind load image-archive bin/sluice-image.tar && kubectl
// apply -k deploy/` runs what was just built.
func TestImageTagMatchesMakefile(t *testing.T) {
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	image, tag := makeVar(t, string(mk), "IMAGE"), makeVar(t, string(mk), "TAG")
	if !strings.Contains(string(mk), "-tag $(IMAGE):$(TAG)") {
		t.Error("make image does not tag the image $(IMAGE):$(TAG)")
	}

	var kust struct {
		Images []struct {
			Name    string `yaml:"name"`
			NewName string `yaml:"newName"`
			NewTag  string `yaml:"newTag"`
		} `yaml:"images"`
	}
	readYAMLFile(t, "kustomization.yaml", &kust)
	found := false
	for _, im := range kust.Images {
		if im.Name == image {
			found = true
			if im.NewName != "" || im.NewTag != tag {
				t.Errorf("kustomization.yaml sets %s to %s:%s, want the Makefile's %s:%s", image, im.NewName, im.NewTag, image, tag)
			}
		}
	}
	if !found {
		t.Errorf("kustomization.yaml does not set the tag of %s", image)
	}

	var values struct {
		Image struct{ Repository, Tag string } `yaml:"image"`
	}
	readYAMLFile(t, "helm/sluice/values.yaml", &values)
	if values.Image.Repository != image || values.Image.Tag != tag {
		t.Errorf("the chart's image is %s:%s, want the Makefile's %s:%s", values.Image.Repository, values.Image.Tag, image, tag)
	}
	var chart struct {
		AppVersion string `yaml:"appVersion"`
	}
	readYAMLFile(t, "helm/sluice/Chart.yaml", &chart)
	if chart.AppVersion != tag {
		t.Errorf("Chart.yaml appVersion %q, want the Makefile's tag %q", chart.AppVersion, tag)
	}

	// Every other mention of the image in deploy/ is untagged (kustomize
	// sets the tag) or carries the Makefile's tag; a comment may show a
	// release tag as an example.
	ref := regexp.MustCompile(regexp.QuoteMeta(image) + `(:[A-Za-z0-9_.-]+)?`)
	release := regexp.MustCompile(`^:v\d+\.\d+\.\d+$`)
	mentions := 0
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".go") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(data), "\n") {
			for _, m := range ref.FindAllStringSubmatch(line, -1) {
				mentions++
				comment := strings.HasPrefix(strings.TrimSpace(line), "#")
				if m[1] != "" && m[1] != ":"+tag && !(comment && release.MatchString(m[1])) {
					t.Errorf("%s:%d names %s, want %s or %s:%s", path, i+1, m[0], image, image, tag)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if mentions < 4 {
		t.Errorf("found the image named %d times in deploy/, want the manifests, the chart and the Dockerfile", mentions)
	}

	// The docs may show a release tag as an example, never one that
	// deploy/ does not run by default and no release would have.
	for _, doc := range []string{"../README.md", "../docs/kubernetes.md"} {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(regexp.QuoteMeta(image)+`:([A-Za-z0-9_.-]+)`).FindAllStringSubmatch(string(data), -1) {
			if m[1] != tag && !regexp.MustCompile(`^v\d+\.\d+\.\d+$`).MatchString(m[1]) {
				t.Errorf("%s names %s; want the Makefile's tag %s or a release v1.2.3", doc, m[0], tag)
			}
		}
	}
}
