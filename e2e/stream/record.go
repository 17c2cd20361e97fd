package stream

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"time"
)

// Record is one received packet.
type Record struct {
	Seq  uint64
	Sent int64 // sender's clock, Unix nanoseconds
	Recv int64 // receiver's clock, Unix nanoseconds
}

// Latency is the one-way latency (both ends share the lab kernel's clock).
func (r Record) Latency() time.Duration { return time.Duration(r.Recv - r.Sent) }

// SentAt and RecvAt return the times as time.Time.
func (r Record) SentAt() time.Time { return time.Unix(0, r.Sent) }
func (r Record) RecvAt() time.Time { return time.Unix(0, r.Recv) }

// RecordLen is the size of one record in a record file: seq, sent, recv as
// little-endian 64-bit integers, in arrival order, no header. A reader may
// meet a partial record at the end of a file still being written: it is
// left for the next read.
const RecordLen = 24

// AppendRecord appends r's file form to b.
func AppendRecord(b []byte, r Record) []byte {
	b = binary.LittleEndian.AppendUint64(b, r.Seq)
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Sent))
	return binary.LittleEndian.AppendUint64(b, uint64(r.Recv))
}

// ParseRecords decodes whole records from b and returns them with the
// number of bytes used (a multiple of RecordLen).
func ParseRecords(b []byte) ([]Record, int) {
	n := len(b) / RecordLen
	out := make([]Record, n)
	for i := range out {
		o := i * RecordLen
		out[i] = Record{
			Seq:  binary.LittleEndian.Uint64(b[o:]),
			Sent: int64(binary.LittleEndian.Uint64(b[o+8:])),
			Recv: int64(binary.LittleEndian.Uint64(b[o+16:])),
		}
	}
	return out, n * RecordLen
}

// Tail reads a record file that may still be growing: each Read returns
// the records appended since the previous one.
type Tail struct {
	Path string
	off  int64
}

// Read returns the new whole records.
func (t *Tail) Read() ([]Record, error) {
	f, err := os.Open(t.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(t.off, io.SeekStart); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", t.Path, err)
	}
	recs, used := ParseRecords(b)
	t.off += int64(used)
	return recs, nil
}

// ReadFile reads a whole record file.
func ReadFile(path string) ([]Record, error) {
	t := Tail{Path: path}
	return t.Read()
}
