package metrics

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// goRuntime adds the families of client_golang's default Go collector,
// with its names and help texts. runtime.ReadMemStats stops the world for
// a moment: once per scrape, never in between.
func goRuntime(fs *families) {
	var gc debug.GCStats
	gc.PauseQuantiles = make([]time.Duration, 5)
	debug.ReadGCStats(&gc)
	qs := make([]float64, len(gc.PauseQuantiles))
	for i, d := range gc.PauseQuantiles {
		qs[i] = d.Seconds()
	}
	fs.add("go_gc_duration_seconds", "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.", summary).
		summary([]float64{0, 0.25, 0.5, 0.75, 1}, qs, gc.PauseTotal.Seconds(), uint64(gc.NumGC))

	rm := []metrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/gomemlimit:bytes"}}
	metrics.Read(rm)
	fs.add("go_gc_gogc_percent", "Heap size target percentage configured by the user, otherwise 100. This value is set by the GOGC environment variable, and the runtime/debug.SetGCPercent function. Sourced from /gc/gogc:percent.", gauge).
		sample(uintValue(rm[0]))
	fs.add("go_gc_gomemlimit_bytes", "Go runtime memory limit configured by the user, otherwise math.MaxInt64. This value is set by the GOMEMLIMIT environment variable, and the runtime/debug.SetMemoryLimit function. Sourced from /gc/gomemlimit:bytes.", gauge).
		sample(uintValue(rm[1]))
	fs.add("go_sched_gomaxprocs_threads", "The current runtime.GOMAXPROCS setting, or the number of operating system threads that can execute user-level Go code simultaneously. Sourced from /sched/gomaxprocs:threads.", gauge).
		sample(float64(runtime.GOMAXPROCS(0)))

	fs.add("go_goroutines", "Number of goroutines that currently exist.", gauge).sample(float64(runtime.NumGoroutine()))
	threads, _ := runtime.ThreadCreateProfile(nil)
	fs.add("go_threads", "Number of OS threads created.", gauge).sample(float64(threads))
	fs.add("go_info", "Information about the Go environment.", gauge).sample(1, "version", runtime.Version())

	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	for _, m := range []struct {
		name, help string
		typ        metricType
		v          uint64
	}{
		{"alloc_bytes", "Number of bytes allocated in heap and currently in use. Equals to /memory/classes/heap/objects:bytes.", gauge, ms.Alloc},
		{"alloc_bytes_total", "Total number of bytes allocated in heap until now, even if released already. Equals to /gc/heap/allocs:bytes.", counter, ms.TotalAlloc},
		{"buck_hash_sys_bytes", "Number of bytes used by the profiling bucket hash table. Equals to /memory/classes/profiling/buckets:bytes.", gauge, ms.BuckHashSys},
		{"frees_total", "Total number of heap objects frees. Equals to /gc/heap/frees:objects + /gc/heap/tiny/allocs:objects.", counter, ms.Frees},
		{"gc_sys_bytes", "Number of bytes used for garbage collection system metadata. Equals to /memory/classes/metadata/other:bytes.", gauge, ms.GCSys},
		{"heap_alloc_bytes", "Number of heap bytes allocated and currently in use, same as go_memstats_alloc_bytes. Equals to /memory/classes/heap/objects:bytes.", gauge, ms.HeapAlloc},
		{"heap_idle_bytes", "Number of heap bytes waiting to be used. Equals to /memory/classes/heap/released:bytes + /memory/classes/heap/free:bytes.", gauge, ms.HeapIdle},
		{"heap_inuse_bytes", "Number of heap bytes that are in use. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes", gauge, ms.HeapInuse},
		{"heap_objects", "Number of currently allocated objects. Equals to /gc/heap/objects:objects.", gauge, ms.HeapObjects},
		{"heap_released_bytes", "Number of heap bytes released to OS. Equals to /memory/classes/heap/released:bytes.", gauge, ms.HeapReleased},
		{"heap_sys_bytes", "Number of heap bytes obtained from system. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes + /memory/classes/heap/released:bytes + /memory/classes/heap/free:bytes.", gauge, ms.HeapSys},
		{"mallocs_total", "Total number of heap objects allocated, both live and gc-ed. Semantically a counter version for go_memstats_heap_objects gauge. Equals to /gc/heap/allocs:objects + /gc/heap/tiny/allocs:objects.", counter, ms.Mallocs},
		{"mcache_inuse_bytes", "Number of bytes in use by mcache structures. Equals to /memory/classes/metadata/mcache/inuse:bytes.", gauge, ms.MCacheInuse},
		{"mcache_sys_bytes", "Number of bytes used for mcache structures obtained from system. Equals to /memory/classes/metadata/mcache/inuse:bytes + /memory/classes/metadata/mcache/free:bytes.", gauge, ms.MCacheSys},
		{"mspan_inuse_bytes", "Number of bytes in use by mspan structures. Equals to /memory/classes/metadata/mspan/inuse:bytes.", gauge, ms.MSpanInuse},
		{"mspan_sys_bytes", "Number of bytes used for mspan structures obtained from system. Equals to /memory/classes/metadata/mspan/inuse:bytes + /memory/classes/metadata/mspan/free:bytes.", gauge, ms.MSpanSys},
		{"next_gc_bytes", "Number of heap bytes when next garbage collection will take place. Equals to /gc/heap/goal:bytes.", gauge, ms.NextGC},
		{"other_sys_bytes", "Number of bytes used for other system allocations. Equals to /memory/classes/other:bytes.", gauge, ms.OtherSys},
		{"stack_inuse_bytes", "Number of bytes obtained from system for stack allocator in non-CGO environments. Equals to /memory/classes/heap/stacks:bytes.", gauge, ms.StackInuse},
		{"stack_sys_bytes", "Number of bytes obtained from system for stack allocator. Equals to /memory/classes/heap/stacks:bytes + /memory/classes/os-stacks:bytes.", gauge, ms.StackSys},
		{"sys_bytes", "Number of bytes obtained from system. Equals to /memory/classes/total:byte.", gauge, ms.Sys},
	} {
		fs.add("go_memstats_"+m.name, m.help, m.typ).sample(float64(m.v))
	}
	fs.add("go_memstats_last_gc_time_seconds", "Number of seconds since 1970 of last garbage collection.", gauge).
		sample(float64(ms.LastGC) / 1e9)
}

func uintValue(s metrics.Sample) float64 {
	if s.Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return float64(s.Value.Uint64())
}
