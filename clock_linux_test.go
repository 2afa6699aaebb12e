package pibridge

import "testing"

// TestKernelClockAnswers: adjtimex needs no privilege, so on Linux the
// bridge always knows whether its clock is synchronised.
func TestKernelClockAnswers(t *testing.T) {
	synced, known, maxErr := kernelClock()
	if !known {
		t.Fatal("adjtimex did not answer")
	}
	if maxErr < 0 {
		t.Errorf("max error %v, want ≥ 0", maxErr)
	}
	t.Logf("this machine's clock: synced %v, max error %v", synced, maxErr)
}
