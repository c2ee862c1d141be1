package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Record is one connection record the broker logs (JSON, with AWS IoT's log field names: see
// broker/hooks.go and aws-iot-core/cwl-format.md): a Connect or a Disconnect.
type Record struct {
	Time             time.Time `json:"timestamp"`
	EventType        string    `json:"eventType"`
	Status           string    `json:"status"`
	ClientID         string    `json:"clientId"`
	ThingName        string    `json:"thingName"`
	PrincipalID      string    `json:"principalId"`
	DisconnectReason string    `json:"disconnectReason"`
	Reason           string    `json:"reason"`
}

// duplicate reports whether the record is a disconnection for a client ID taken over by another
// connection (disconnectReason DUPLICATE_CLIENTID, reason DUPLICATE_CLIENT_ID, as AWS logs it).
func (r Record) duplicate() bool {
	return r.EventType == "Disconnect" && (r.DisconnectReason == "DUPLICATE_CLIENTID" || r.Reason == "DUPLICATE_CLIENT_ID")
}

// ReadRecords reads the broker's JSON log (one record per line, as `ggbroker serve --log-format json`
// writes to stderr) and keeps its Connect and Disconnect records. Lines that are not JSON objects
// (console-format logs, other output) are counted in skipped, not refused: a log file may mix them.
func ReadRecords(r io.Reader) (records []Record, skipped int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if b[0] != '{' {
			skipped++
			continue
		}
		var rec Record
		if json.Unmarshal(b, &rec) != nil {
			skipped++
			continue
		}
		if rec.EventType == "Connect" || rec.EventType == "Disconnect" {
			records = append(records, rec)
		}
	}
	if err := sc.Err(); err != nil {
		return records, skipped, fmt.Errorf("line %d: %w", line+1, err)
	}
	return records, skipped, nil
}
