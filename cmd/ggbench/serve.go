package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ggbroker/ggbroker/app"
)

// cmdServe runs ggbroker in this process, as `ggbroker serve --config FILE` does (broker.New and
// Run, with the authorizer broker.New chooses), and writes a CPU profile (and a heap profile) of the
// whole run when it stops on SIGINT or SIGTERM. ggbroker has no pprof endpoint; this is how the
// load runs are profiled: `go tool pprof -top ggbench cpu.prof`.
func cmdServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	cfgFile := fs.String("config", "", "ggbroker config file")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	memProfile := fs.String("memprofile", "", "write a heap profile at the end of the run to this file")
	_ = fs.Parse(args)

	cfg, err := app.LoadConfig(*cfgFile, nil)
	if err != nil {
		return err
	}
	zc := zap.NewProductionConfig()
	lvl, err := zapcore.ParseLevel(cfg.Log.Level)
	if err != nil {
		return err
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Sampling = nil
	log, err := zc.Build()
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // nothing to do if stderr is gone
	b, err := app.New(cfg, log)
	if err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
			fmt.Fprintln(os.Stderr, "ggbench: CPU profile in", *cpuProfile)
		}()
	}
	if *memProfile != "" {
		// SIGUSR1 writes the live heap while clients are connected (what an idle connection holds);
		// the end of the run writes the allocations of the whole run.
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		defer signal.Stop(usr1)
		go func() {
			for range usr1 {
				for range 4 { // each GC halves a stack that uses a quarter of it at most: a few, for the idle state
					runtime.GC()
				}
				path := *memProfile + ".live"
				if f, err := os.Create(path); err == nil {
					_ = pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					fmt.Fprintf(os.Stderr, "ggbench: live heap in %s (%d goroutines; heap in use %d KiB, stacks %d KiB, runtime total %d KiB)\n",
						path, runtime.NumGoroutine(), ms.HeapInuse>>10, ms.StackInuse>>10, ms.Sys>>10)
				}
			}
		}()
	}
	err = b.Run(ctx)
	if *memProfile != "" {
		runtime.GC()
		f, ferr := os.Create(*memProfile)
		if ferr == nil {
			_ = pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		}
	}
	return err
}
