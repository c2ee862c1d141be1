package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAWSPagesParse parses every policy document printed on the AWS pages
// of the reference folder. The pages have a few documents that AWS itself
// would refuse (broken JSON); those must be refused here too, the rest
// must load.
func TestAWSPagesParse(t *testing.T) {
	dir := "/work/shared/reference/aws-iot-core"
	if _, err := os.Stat(dir); err != nil {
		t.Skip("reference pages not available")
	}
	// page -> indexes (among its JSON blocks) of documents with broken JSON.
	broken := map[string]map[int]string{
		"connect-policy.md":                   {3: "missing closing brace"},
		"retained-message-policy-examples.md": {0: "misplaced braces"},
		"pub-sub-policy.md":                   {20: "trailing comma in an Action list"},
	}
	for _, page := range []string{"pub-sub-policy.md", "connect-policy.md", "thing-policy-examples.md", "certificate-policy-examples.md", "cert-policy-variables.md", "retained-message-policy-examples.md", "basic-policy-variables.md"} {
		data, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(string(data), "```")
		n := 0
		for i := 1; i < len(parts); i += 2 {
			block := strings.TrimSpace(parts[i])
			if !strings.HasPrefix(block, "{") {
				continue
			}
			idx := n
			n++
			if !strings.Contains(block, `"Version"`) {
				continue // a statement fragment, not a document
			}
			_, err := ParseDocument(page, []byte(block))
			if why, bad := broken[page][idx]; bad {
				if err == nil {
					t.Errorf("%s #%d (%s) parsed", page, idx, why)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s #%d: %v", page, idx, err)
			}
		}
	}
}
