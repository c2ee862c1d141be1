package bridge

import (
	"os"
	"syscall"
)

// fdatasync flushes a segment's data and its size, not its timestamps: one flush per commit.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
