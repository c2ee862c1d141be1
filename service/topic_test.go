package service

import "testing"

func TestTopicMatches(t *testing.T) {
	cases := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"#", "a/b", true},
		{"#", "$aws/things/t/shadow/get", false},
		{"+/things/t", "$aws/things/t", false},
		{"$aws/things/+/shadow/get", "$aws/things/t/shadow/get", true},
		{"$aws/things/+/shadow/get", "$aws/things/t/shadow/name/n/get", false},
		{"$aws/things/+/shadow/name/+/get", "$aws/things/t/shadow/name/n/get", true},
		{"a/+/c", "a//c", true},
		{"a", "a/b", false},
		{"a/b/c", "a/b", false},
	}
	for _, tc := range cases {
		if got := TopicMatches(tc.filter, tc.topic); got != tc.want {
			t.Errorf("TopicMatches(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}
