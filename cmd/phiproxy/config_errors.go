package main

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// yaml.v3 describes decoding problems in Go's terms ("cannot unmarshal
// !!str `abc` into time.Duration", "field x not found in type
// crypto.Config"). yamlError rewrites them in the configuration's terms
// and leaves the offending value out (a secret pasted into the wrong
// field must not end up in a terminal log).

var (
	yamlTypeRE  = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+) (?:`[^`]*`|.*?) ?into (\\S+)$")
	yamlFieldRE = regexp.MustCompile(`^line (\d+): field (\S+) not found in type (\S+)$`)
)

// yamlSections names the configuration section each Go type decodes.
var yamlSections = map[string]string{
	"main.fileConfig":         "the top level",
	"main.logConfig":          "log",
	"crypto.Config":           "keys",
	"crypto.LocalConfig":      "keys.local",
	"crypto.AWSKMSConfig":     "keys.aws_kms",
	"proxy.Config":            "the top level",
	"proxy.ListenConfig":      "listen",
	"proxy.ListenTLSConfig":   "listen.tls",
	"proxy.UpstreamConfig":    "upstream",
	"proxy.UpstreamTLSConfig": "upstream.tls",
	"proxy.MetricsConfig":     "metrics",
	"proxy.LimitsConfig":      "limits",
}

// yamlKinds describes what a Go type wants.
func yamlKind(goType string) string {
	switch {
	case goType == "time.Duration":
		return "a duration such as 10s or 500ms"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["), yamlSections[goType] != "", strings.Contains(goType, "."):
		return "a mapping"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "an integer"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "a string"
	}
	return "another kind of value"
}

var yamlTags = map[string]string{"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean", "seq": "a list", "map": "a mapping", "null": "nothing"}

// yamlError prefixes err with name and, for yaml.v3's decoding errors,
// rewrites each line as described above.
func yamlError(name string, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%s: %w", name, err)
	}
	lines := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		if m := yamlTypeRE.FindStringSubmatch(e); m != nil {
			found := yamlTags[m[2]]
			if found == "" {
				found = "a " + m[2]
			}
			lines = append(lines, fmt.Sprintf("%s:%s: want %s, found %s", name, m[1], yamlKind(m[3]), found))
			continue
		}
		if m := yamlFieldRE.FindStringSubmatch(e); m != nil {
			section := yamlSections[m[3]]
			if section == "" {
				section = "this section"
			}
			lines = append(lines, fmt.Sprintf("%s:%s: unknown key %q in %s", name, m[1], m[2], section))
			continue
		}
		lines = append(lines, name+": "+e)
	}
	return errors.New(strings.Join(lines, "\n"))
}
