package kerneltest

import (
	"bytes"
	"fmt"
	"syscall"
)

// cpioWriter builds a "newc" cpio archive, the initramfs format the kernel
// unpacks; no cpio tool is needed on the host.
type cpioWriter struct {
	b   bytes.Buffer
	ino int
}

func (w *cpioWriter) entry(name string, mode uint32, rdevMajor, rdevMinor int, data []byte) {
	w.ino++
	fmt.Fprintf(&w.b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		w.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	w.b.WriteString(name)
	w.b.WriteByte(0)
	w.pad()
	w.b.Write(data)
	w.pad()
}

func (w *cpioWriter) pad() {
	for w.b.Len()%4 != 0 {
		w.b.WriteByte(0)
	}
}

func (w *cpioWriter) dir(name string) { w.entry(name, syscall.S_IFDIR|0o755, 0, 0, nil) }

func (w *cpioWriter) file(name string, perm uint32, data []byte) {
	w.entry(name, syscall.S_IFREG|perm, 0, 0, data)
}

func (w *cpioWriter) node(name string, mode uint32, major, minor int) {
	w.entry(name, mode, major, minor, nil)
}

func (w *cpioWriter) finish() []byte {
	w.entry("TRAILER!!!", 0, 0, 0, nil)
	return w.b.Bytes()
}
