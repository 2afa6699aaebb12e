// Package kerneltest is the kernel GPIO rig: its tests boot Debian's arm64
// kernel under qemu-system-aarch64 with two gpio-sim chips named like a
// Raspberry Pi 5 (pinctrl-rp1) and a Pi 4 (pinctrl-bcm2711) header, run the
// real bridge-arm64 on them, and check from the host, through a small
// control agent in the guest, what the kernel saw: biases, levels, edges and
// the gpio tracepoints. Everything comes from Debian packages and is built
// once into a cache outside the repository (build.sh).
package kerneltest
