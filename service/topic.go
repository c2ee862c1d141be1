package service

import "strings"

// TopicMatches reports whether an MQTT topic filter matches a topic name, as Handle's filters and
// the broker's subscriptions match: + is one level, # the rest (and the parent level: "a/#" matches
// "a"), and a filter that starts with a wildcard does not match a topic that starts with "$"
// ([MQTT-4.7.2-1]). The broker, the bridge and the advisor's test endpoint all match with it.
func TopicMatches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		t, trest, tmore := strings.Cut(topic, "/")
		switch {
		case f == "#":
			return true
		case f != "+" && f != t:
			return false
		case !fmore && !tmore:
			return true
		case !fmore:
			return false
		case !tmore:
			return frest == "#" // "a/#" matches "a"
		}
		filter, topic = frest, trest
	}
}
