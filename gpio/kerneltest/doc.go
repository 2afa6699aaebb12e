// Package kerneltest is the kernel GPIO rig: its tests run the real
// bridge-arm64 under qemu-system-aarch64 on gpio-sim chips named like a
// Pi 4 and a Pi 5 header, and check what the kernel saw (build.sh).
package kerneltest
