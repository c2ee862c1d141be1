package policy

import "testing"

func TestStatementsOf(t *testing.T) {
	sts, err := StatementsOf([]byte(`{"Version":"2012-10-17","Statement":[
	  {"Sid":"A","Effect":"Allow","Action":"iot:*","Resource":["r1","r2"]},
	  {"Effect":"Deny","NotAction":[],"NotResource":"x"}]}`))
	if err != nil || len(sts) != 2 {
		t.Fatalf("%v %v", sts, err)
	}
	if a := sts[0]; !a.Allow() || a.Where() != `statement 0 ("A")` || len(a.Action) != 1 || len(a.Resource) != 2 || a.NotAction != nil {
		t.Errorf("first: %+v", a)
	}
	if d := sts[1]; d.Allow() || d.NotAction == nil || len(d.NotResource) != 1 || d.Where() != "statement 1" {
		t.Errorf("second: %+v (an empty NotAction list is still a NotAction)", d)
	}
	one, err := StatementsOf([]byte(`{"Statement":{"Effect":"Allow","Action":["iot:Publish"]}}`))
	if err != nil || len(one) != 1 || one[0].Action[0] != "iot:Publish" {
		t.Errorf("one statement: %v %v", one, err)
	}
	if _, err := StatementsOf([]byte(`{"Statement":7}`)); err == nil {
		t.Error("a Statement that is no object or list was read")
	}
}
