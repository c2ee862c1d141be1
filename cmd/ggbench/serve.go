package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ggbroker/ggbroker/app"
	"github.com/ggbroker/ggbroker/config"
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

	cfg, err := config.Load(*cfgFile, nil)
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
