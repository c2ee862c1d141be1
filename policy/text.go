package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// StatementText is a policy statement as written (before compilation), for checks that judge a
// policy by its text rather than by a decision: an audit's "allows every action", "uses NotResource".
type StatementText struct {
	Index                                    int // 0-based position in the document
	Sid, Effect                              string
	Action, NotAction, Resource, NotResource []string
}

// Allow reports whether the statement is an Allow.
func (st StatementText) Allow() bool { return strings.EqualFold(st.Effect, "Allow") }

// Where names the statement for a person: `statement 2 ("PublishOwnTopics")`.
func (st StatementText) Where() string {
	s := fmt.Sprintf("statement %d", st.Index)
	if st.Sid != "" {
		s += fmt.Sprintf(" (%q)", st.Sid)
	}
	return s
}

// StatementsOf reads a policy document's statements as written: Statement as one object or a list,
// Action and Resource (and their Not forms) as one string or a list.
func StatementsOf(doc []byte) ([]StatementText, error) {
	var d struct {
		Statement json.RawMessage `json:"Statement"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, err
	}
	type raw struct {
		Sid         string          `json:"Sid"`
		Effect      string          `json:"Effect"`
		Action      json.RawMessage `json:"Action"`
		NotAction   json.RawMessage `json:"NotAction"`
		Resource    json.RawMessage `json:"Resource"`
		NotResource json.RawMessage `json:"NotResource"`
	}
	var sts []raw
	if bytes.HasPrefix(bytes.TrimSpace(d.Statement), []byte("[")) {
		if err := json.Unmarshal(d.Statement, &sts); err != nil {
			return nil, fmt.Errorf("Statement: %w", err)
		}
	} else {
		var one raw
		if err := json.Unmarshal(d.Statement, &one); err != nil {
			return nil, fmt.Errorf("Statement: %w", err)
		}
		sts = []raw{one}
	}
	out := make([]StatementText, len(sts))
	for i, st := range sts {
		out[i] = StatementText{Index: i, Sid: st.Sid, Effect: st.Effect, Action: stringOrList(st.Action),
			NotAction: stringOrList(st.NotAction), Resource: stringOrList(st.Resource), NotResource: stringOrList(st.NotResource)}
	}
	return out, nil
}

// stringOrList reads a JSON string or list of strings; anything else is empty.
func stringOrList(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}
	}
	var many []string
	_ = json.Unmarshal(raw, &many)
	return many
}
