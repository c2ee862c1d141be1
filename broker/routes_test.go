package broker

import (
	"slices"
	"testing"
)

// TestRouteTable: the first-level index never hides a route whose filter matches, and the routes
// come in registration order.
func TestRouteTable(t *testing.T) {
	routes := func(filters ...string) []route {
		var rs []route
		for _, f := range filters {
			rs = append(rs, route{filter: f, service: f})
		}
		return rs
	}
	cases := []struct {
		filters []string
		topic   string
		want    []string
	}{
		{[]string{"$aws/things/+/shadow/update", "a/#"}, "bench/x", nil},
		{[]string{"$aws/things/+/shadow/update", "a/#"}, "$aws/things/t/shadow/update", []string{"$aws/things/+/shadow/update"}},
		{[]string{"$aws/things/+/shadow/update", "a/#"}, "a", []string{"a/#"}},
		{[]string{"a/#", "a/b", "c"}, "a/b", []string{"a/#", "a/b"}},
		{[]string{"$aws/x", "+/x"}, "b/x", []string{"+/x"}},
		{[]string{"$aws/x", "#"}, "anything/at/all", []string{"#"}},
		{[]string{"#"}, "$aws/x", nil}, // [MQTT-4.7.2-1]
		{nil, "a", nil},
	}
	for _, c := range cases {
		var got []string
		newRouteTable(routes(c.filters...)).matching(c.topic, func(r *route) bool {
			got = append(got, r.filter)
			return true
		})
		if !slices.Equal(got, c.want) {
			t.Errorf("filters %q, topic %q: matched %q, want %q", c.filters, c.topic, got, c.want)
		}
	}
	// fn returning false stops the walk.
	n := 0
	newRouteTable(routes("a/#", "a/+", "a/b")).matching("a/b", func(*route) bool { n++; return false })
	if n != 1 {
		t.Errorf("a walk stopped at the first route called %d routes", n)
	}
}
