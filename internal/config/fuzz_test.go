package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary files to the loader: it must never panic, every
// error must be an Errors whose lines all read FILE:LINE:COL: message, and
// a config it accepts must validate again.
func FuzzLoad(f *testing.F) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parse("fuzz.yaml", data, testLookup)
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("accepted, then Validate says:\n%v", verr)
			}
			return
		}
		if c != nil {
			t.Fatal("a Config came back with the error")
		}
		var errs Errors
		if !errors.As(err, &errs) || len(errs) == 0 {
			t.Fatalf("error %T is not a non-empty Errors: %v", err, err)
		}
		for _, e := range errs {
			if e.File != "fuzz.yaml" || e.Line < 1 || e.Col < 1 || e.Msg == "" {
				t.Fatalf("problem without a place: %#v", e)
			}
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !errorLineRE.MatchString(line) {
				t.Fatalf("line not in FILE:LINE:COL: message form: %q", line)
			}
		}
	})
}
