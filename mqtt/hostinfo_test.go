package mqtt

import (
	"testing"
	"testing/fstest"
)

func TestReadHostInfo(t *testing.T) {
	tests := []struct {
		name string
		fs   fstest.MapFS
		want hostInfo
	}{
		{"nothing", fstest.MapFS{}, hostInfo{}},
		{"device tree", testHost, hostInfo{model: "Raspberry Pi 4 Model B Rev 1.4", serial: "10000000abcdef01"}},
		{"sysfs device tree", fstest.MapFS{
			"sys/firmware/devicetree/base/model": {Data: []byte("Raspberry Pi Zero W Rev 1.1\x00")},
		}, hostInfo{model: "Raspberry Pi Zero W Rev 1.1"}},
		{"cpuinfo", fstest.MapFS{
			"proc/cpuinfo": {Data: []byte("processor\t: 0\nHardware\t: BCM2835\nRevision\t: 9000c1\nSerial\t\t: 00000000a1b2c3d4\nModel\t\t: Raspberry Pi Zero W Rev 1.1\n")},
		}, hostInfo{model: "Raspberry Pi Zero W Rev 1.1", serial: "00000000a1b2c3d4"}},
		{"a PC's cpuinfo: no serial, zeros are none", fstest.MapFS{
			"proc/cpuinfo": {Data: []byte("processor\t: 0\nmodel name\t: Intel(R) Xeon\nSerial\t: 0000000000000000\n")},
		}, hostInfo{}},
		{"binary junk is ignored", fstest.MapFS{
			"proc/device-tree/model": {Data: []byte("\x01\x02\xff")},
		}, hostInfo{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := readHostInfo(tt.fs); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
