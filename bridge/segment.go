package bridge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// The spool's log: segment files in <stateDir>/bridge-spool/, named by the first sequence number
// they were made for (20 digits, so that names sort as numbers). A segment starts with a header and
// holds frames:
//
//	header: "GGBSPOOL" | version 1 | 7 bytes zero | first sequence number (8 bytes, big endian)
//	frame:  body length (4) | CRC-32C of the body (4) | body
//	body:   kind (1) | ...
//	        kindRecord: sequence number (8) | the record's encoding (encodeRecord)
//	        kindDelete: sequence numbers (8 each) of records acknowledged or dropped
//
// Frames are only ever appended. A record is live from its frame until a later delete frame names it.
// A segment goes once it holds no live record and every older one has gone: a delete frame only names
// records of its own or older segments, so removing segments oldest first never brings a deleted
// record back. The first sequence number in the header keeps the counter when every record is gone.

const (
	segmentMagic   = "GGBSPOOL"
	segmentVersion = 1
	headerLen      = 24
	frameHeaderLen = 8
	kindRecord     = 1
	kindDelete     = 2
	// segmentMax is the size past which the next commit with records starts a new segment.
	segmentMax = 4 << 20
	// maxFrame bounds a frame's body when reading, against a corrupt length.
	maxFrame = 1 << 28
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// segment is one file of the log.
type segment struct {
	f     *os.File
	path  string
	first uint64 // from the header
	size  int64  // bytes written and committed (where the next frame goes)
	live  int    // live records in it
}

func segmentName(first uint64) string { return fmt.Sprintf("%020d.log", first) }

// createSegment makes a new segment file with its header and makes it durable, the directory entry
// included, before any record goes into it.
func createSegment(dir string, first uint64) (*segment, error) {
	path := filepath.Join(dir, segmentName(first))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	hdr := make([]byte, headerLen)
	copy(hdr, segmentMagic)
	hdr[8] = segmentVersion
	binary.BigEndian.PutUint64(hdr[16:], first)
	if _, err := f.Write(hdr); err != nil {
		f.Close()
		return nil, err
	}
	if err := fdatasync(f); err != nil {
		f.Close()
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, err
	}
	return &segment{f: f, path: path, first: first, size: headerLen}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// listSegments returns the segment files of dir, oldest first.
func listSegments(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	type named struct {
		first uint64
		path  string
	}
	var segs []named
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".log") {
			continue
		}
		first, err := strconv.ParseUint(strings.TrimSuffix(name, ".log"), 10, 64)
		if err != nil {
			continue
		}
		segs = append(segs, named{first, filepath.Join(dir, name)})
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].first < segs[j].first })
	out := make([]string, len(segs))
	for i, s := range segs {
		out[i] = s.path
	}
	return out, nil
}

// scannedRecord is a record frame found by scanSegment.
type scannedRecord struct {
	seq uint64
	off int64 // of the record's encoding in the file
	n   int
}

// errBadSegment is a segment file without a valid header.
var errBadSegment = errors.New("not a bridge spool segment")

// scanSegment opens a segment and reads its frames. The scan stops at the first frame that is cut
// short or fails its CRC: the tail of a write that was never completed (its commit, and so the
// PUBACKs waiting for it, never happened). tail is how many bytes it ignored there.
func scanSegment(path string) (seg *segment, recs []scannedRecord, deletes []uint64, tail int64, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0o600)
	if err != nil {
		return nil, nil, nil, 0, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, nil, nil, 0, err
	}
	if len(data) < headerLen || !bytes.Equal(data[:8], []byte(segmentMagic)) || data[8] != segmentVersion {
		f.Close()
		return nil, nil, nil, 0, fmt.Errorf("%s: %w", path, errBadSegment)
	}
	seg = &segment{f: f, path: path, first: binary.BigEndian.Uint64(data[16:24])}
	off := int64(headerLen)
	for {
		rest := data[off:]
		if len(rest) < frameHeaderLen {
			break
		}
		n := int64(binary.BigEndian.Uint32(rest))
		if n < 1 || n > maxFrame || int64(len(rest)) < frameHeaderLen+n {
			break
		}
		body := rest[frameHeaderLen : frameHeaderLen+n]
		if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(rest[4:]) {
			break
		}
		switch body[0] {
		case kindRecord:
			if len(body) < 9 {
				break
			}
			recs = append(recs, scannedRecord{seq: binary.BigEndian.Uint64(body[1:]), off: off + frameHeaderLen + 9, n: len(body) - 9})
		case kindDelete:
			for p := body[1:]; len(p) >= 8; p = p[8:] {
				deletes = append(deletes, binary.BigEndian.Uint64(p))
			}
		}
		off += frameHeaderLen + n
	}
	seg.size = off
	return seg, recs, deletes, int64(len(data)) - off, nil
}

// appendFrame appends one frame of kind with body parts to b.
func appendFrame(b []byte, kind byte, seq uint64, enc func([]byte) []byte) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0, kind)
	if kind == kindRecord {
		b = binary.BigEndian.AppendUint64(b, seq)
	}
	b = enc(b)
	body := b[start+frameHeaderLen:]
	binary.BigEndian.PutUint32(b[start:], uint32(len(body)))
	binary.BigEndian.PutUint32(b[start+4:], crc32.Checksum(body, crcTable))
	return b
}
