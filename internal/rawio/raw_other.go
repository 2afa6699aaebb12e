//go:build !linux

package rawio

import "syscall"

const supported = false

func rawWrite(uintptr, []byte) (int, syscall.Errno) { return 0, syscall.EINVAL }

func rawRead(uintptr, []byte) (int, syscall.Errno) { return 0, syscall.EINVAL }
