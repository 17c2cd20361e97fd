// Package config owns meshwan-edge's configuration file
// (/etc/meshwan/edge.yaml): the same settings as the command-line flags,
// for images that are built once for a whole fleet. Keys are the flag
// names without dashes in front ("controller", "claim-token", "ca-hash",
// "wan-interface", ...); a list value is joined with commas. A flag given
// on the command line wins over the file.
package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Apply reads the file at path and sets every flag of fs it names that
// was not set on the command line. A missing file is not an error unless
// required (the path was given explicitly).
func Apply(fs *flag.FlagSet, path string, required bool) error {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !required {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	return ApplyBytes(fs, path, raw)
}

// ApplyBytes is Apply on the file's content (name is for messages).
func ApplyBytes(fs *flag.FlagSet, name string, raw []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: expected a mapping of setting: value", name, m.Line)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		key := k.Value
		if seen[key] {
			return fmt.Errorf("%s:%d: %s given twice", name, k.Line, key)
		}
		seen[key] = true
		f := fs.Lookup(key)
		if f == nil || key == "config" {
			return fmt.Errorf("%s:%d: unknown setting %q (settings are the flag names, e.g. controller, claim-token, ca-hash)", name, k.Line, key)
		}
		var val string
		switch v.Kind {
		case yaml.ScalarNode:
			val = v.Value
		case yaml.SequenceNode:
			var parts []string
			for _, e := range v.Content {
				if e.Kind != yaml.ScalarNode {
					return fmt.Errorf("%s:%d: %s: a list of plain values expected", name, e.Line, key)
				}
				parts = append(parts, e.Value)
			}
			val = strings.Join(parts, ",")
		default:
			return fmt.Errorf("%s:%d: %s: a value or a list expected", name, v.Line, key)
		}
		if set[key] {
			continue // the command line wins
		}
		if err := fs.Set(key, val); err != nil {
			return fmt.Errorf("%s:%d: %s: %v", name, v.Line, key, err)
		}
	}
	return nil
}
