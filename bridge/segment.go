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
// holds frames, then zeros up to its preallocated size:
//
//	header: "GGBSPOOL" | version 1 | 15 bytes zero
//	frame:  body length (4) | CRC-32C of the body (4) | body
//	body:   kind (1) | ...
//	        kindRecord: sequence number (8) | the record's encoding (encodeRecord)
//	        kindDelete: sequence numbers (8 each) of records acknowledged or dropped
//
// Frames are only ever appended. A record is live from its frame until a later delete frame names it.
// A segment goes once it holds no live record and every older one has gone: a delete frame only names
// records of its own or older segments, so removing segments oldest first never brings a deleted
// record back. The name of the last segment keeps the counter when every record is gone.
//
// A segment is written full of zeros (segmentMax) and flushed before it is used: a commit then
// overwrites blocks the file already has, and its fdatasync flushes data only, without the file size
// and block allocation an append changes (on ext4 about 140 instead of 200 us). The next segment is
// made so in the background while the current one fills (spareName), and renamed into place.

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
	// spareName is the next segment while it is made; not a segment until renamed (*.log).
	spareName = "next.tmp"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// segment is one file of the log.
type segment struct {
	f     *os.File
	path  string
	first uint64 // from the name
	size  int64  // bytes written and committed (where the next frame goes)
	live  int    // live records in it
}

func segmentName(first uint64) string { return fmt.Sprintf("%020d.log", first) }

// makeSpare writes a segment file at path: the header, then zeros up to size, flushed.
func makeSpare(path string, size int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	block := make([]byte, 256<<10)
	copy(block, segmentMagic)
	block[8] = segmentVersion
	for off := int64(0); off < max(size, headerLen); off += int64(len(block)) {
		n := min(int64(len(block)), max(size, headerLen)-off)
		if _, err := f.WriteAt(block[:n], off); err != nil {
			f.Close()
			return nil, err
		}
		clear(block[:headerLen])
	}
	if err := fdatasync(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// installSegment renames a spare made by makeSpare into place as the segment for first, and makes
// the name durable before any record goes into it.
func installSegment(dir string, spare *os.File, first uint64) (*segment, error) {
	path := filepath.Join(dir, segmentName(first))
	if err := os.Rename(spare.Name(), path); err != nil {
		spare.Close()
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		spare.Close()
		return nil, err
	}
	return &segment{f: spare, path: path, first: first, size: headerLen}, nil
}

// createSegment makes the segment for first at once (makeSpare, then installSegment).
func createSegment(dir string, first uint64, size int64) (*segment, error) {
	f, err := makeSpare(filepath.Join(dir, spareName), size)
	if err != nil {
		return nil, err
	}
	return installSegment(dir, f, first)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// segmentFile is a segment's path and the first sequence number its name says.
type segmentFile struct {
	path  string
	first uint64
}

// listSegments returns the segment files of dir, oldest first.
func listSegments(dir string) ([]segmentFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []segmentFile
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".log") {
			continue
		}
		first, err := strconv.ParseUint(strings.TrimSuffix(name, ".log"), 10, 64)
		if err != nil {
			continue
		}
		segs = append(segs, segmentFile{filepath.Join(dir, name), first})
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].first < segs[j].first })
	return segs, nil
}

// scannedRecord is a record frame found by scanSegment.
type scannedRecord struct {
	seq uint64
	off int64 // of the record's encoding in the file
	n   int
}

// errBadSegment is a segment file without a valid header.
var errBadSegment = errors.New("not a bridge spool segment")

// scanSegment opens a segment and reads its frames. The scan stops at the preallocated zeros, or at
// the first frame that is cut short or fails its CRC: the tail of a write that was never completed
// (its commit, and so the PUBACKs waiting for it, never happened). dirty says that something other
// than zeros follows the last whole frame.
func scanSegment(path string, first uint64) (seg *segment, recs []scannedRecord, deletes []uint64, dirty bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0o600)
	if err != nil {
		return nil, nil, nil, false, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, nil, nil, false, err
	}
	if len(data) < headerLen || !bytes.Equal(data[:8], []byte(segmentMagic)) || data[8] != segmentVersion {
		f.Close()
		return nil, nil, nil, false, fmt.Errorf("%s: %w", path, errBadSegment)
	}
	seg = &segment{f: f, path: path, first: first}
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
	for _, c := range data[off:] {
		if c != 0 {
			dirty = true
			break
		}
	}
	return seg, recs, deletes, dirty, nil
}

// zeroTail overwrites what follows seg's last whole frame with zeros and flushes it, so that no
// piece of an unfinished write is ever read as part of a later frame.
func zeroTail(seg *segment) error {
	fi, err := seg.f.Stat()
	if err != nil {
		return err
	}
	zeros := make([]byte, 256<<10)
	for off := seg.size; off < fi.Size(); off += int64(len(zeros)) {
		if _, err := seg.f.WriteAt(zeros[:min(int64(len(zeros)), fi.Size()-off)], off); err != nil {
			return err
		}
	}
	return fdatasync(seg.f)
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
