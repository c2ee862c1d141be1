package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// dialTLS opens a TCP connection to addr and, unless cfg is nil, finishes a TLS handshake on it,
// all within timeout.
func dialTLS(ctx context.Context, addr string, cfg *tls.Config, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := net.Dialer{}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return raw, nil
	}
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return conn, nil
}

// connectPacket is an MQTT 3.1.1 CONNECT with a clean session and no credentials (the certificate is
// the credential).
func connectPacket(clientID string, keepAlive uint16) []byte {
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, byte(keepAlive >> 8), byte(keepAlive)}
	return packetOf(0x10, append(vh, mqttStr(clientID)...))
}

// mqttConnect opens a connection, sends CONNECT and waits for a CONNACK that accepts it. The
// returned connection has no deadline.
func mqttConnect(ctx context.Context, addr string, cfg *tls.Config, clientID string, keepAlive uint16, timeout time.Duration) (net.Conn, error) {
	start := time.Now()
	conn, err := dialTLS(ctx, addr, cfg, timeout)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(start.Add(timeout))
	if _, err := conn.Write(connectPacket(clientID, keepAlive)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("write CONNECT: %w", err)
	}
	var ack [4]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil {
		conn.Close()
		return nil, fmt.Errorf("read CONNACK: %w", err)
	}
	if ack[0] != 0x20 || ack[1] != 2 {
		conn.Close()
		return nil, fmt.Errorf("not a CONNACK: % x", ack)
	}
	if ack[3] != 0 {
		conn.Close()
		return nil, fmt.Errorf("CONNACK return code %d", ack[3])
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// mqttClose sends DISCONNECT and closes.
func mqttClose(conn net.Conn) {
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = conn.Write([]byte{0xe0, 0})
	_ = conn.Close()
}

// connOptions are the parameters of the connection scenarios.
type connOptions struct {
	count       int
	concurrency int
	keepAlive   uint16
	settle      time.Duration
}

// runConnections opens count connections with at most concurrency in progress, each with its own
// device, either as MQTT connects (kind "connect", "idle") or bare TLS handshakes ("handshake").
// connect and handshake close each connection as soon as it is made; idle keeps them all open, waits
// settle, reads the broker's RSS and then closes them.
func runConnections(ctx context.Context, t *target, creds *credentials, kind, scenario string, o connOptions) Result {
	r := Result{Scenario: scenario, Kind: kind, Transport: t.transport(), Attempts: o.count, Concurrency: o.concurrency}
	if kind == "handshake" && t.plain {
		r.ErrorExamples = []string{"no TLS on a plain TCP listener"}
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, t.maxDuration)
	defer cancel()
	r.RSSBeforeKiB = t.rss()

	var (
		errs   errorLog
		mu     sync.Mutex
		ok     atomic.Int64
		next   atomic.Int64
		wg     sync.WaitGroup
		opened = make([]net.Conn, o.count)
	)
	start := time.Now()
	for range o.concurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= o.count || ctx.Err() != nil {
					return
				}
				cfg := creds.tlsConfig(i, t.plain)
				var conn net.Conn
				var err error
				if kind == "handshake" {
					conn, err = dialTLS(ctx, t.addr, cfg, t.timeout)
				} else {
					conn, err = mqttConnect(ctx, t.addr, cfg, creds.devices[i].name, o.keepAlive, t.timeout)
				}
				if err != nil {
					mu.Lock()
					errs.add(fmt.Errorf("%s: %w", creds.devices[i].name, err))
					mu.Unlock()
					continue
				}
				ok.Add(1)
				switch kind {
				case "idle":
					opened[i] = conn
				case "connect":
					mqttClose(conn)
				default:
					conn.Close()
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	r.TimedOut = ctx.Err() != nil
	r.Succeeded = int(ok.Load())
	r.Failed = o.count - r.Succeeded
	r.ElapsedSec = round2(elapsed.Seconds())
	r.PerSec = round2(float64(r.Succeeded) / elapsed.Seconds())

	if kind == "idle" {
		select {
		case <-time.After(o.settle):
		case <-ctx.Done():
		}
		r.RSSKiB = t.rss()
		if r.RSSKiB > 0 && r.Succeeded > 0 {
			r.BytesPerConn = float64((r.RSSKiB-r.RSSBeforeKiB)*1024) / float64(r.Succeeded)
			r.BytesPerConn = float64(int64(r.BytesPerConn))
		}
		var cw sync.WaitGroup
		sem := make(chan struct{}, 64)
		for _, c := range opened {
			if c == nil {
				continue
			}
			sem <- struct{}{}
			cw.Go(func() { mqttClose(c); <-sem })
		}
		cw.Wait()
	} else {
		r.RSSKiB = t.rss()
	}
	errs.fill(&r)
	return r
}

// readRSS reads a process's resident set size (VmRSS) in KiB, 0 when it cannot.
func readRSS(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	return parseRSS(f)
}

func parseRSS(r io.Reader) int64 {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kib, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return kib
				}
			}
		}
	}
	return 0
}

// readCPUTicks reads a process's user and system CPU time in clock ticks (fields 14 and 15 of
// /proc/PID/stat), -1 when it cannot.
func readCPUTicks(pid int) int64 {
	if pid <= 0 {
		return -1
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	return parseCPUTicks(string(raw))
}

func parseCPUTicks(stat string) int64 {
	// The command name (field 2) is in parentheses and may hold spaces: count from after it.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return -1
	}
	user, err1 := strconv.ParseInt(f[11], 10, 64)
	sys, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return user + sys
}

// settle waits, between two scenarios, for the broker to finish the work the first one left (closing
// its connections, collecting their garbage, a broker's own clean-up after a burst: ggbroker trims its
// memory a second or two after the last connect), so that it is not counted against the next one: at
// least the given time, then until the broker used at most 2 clock ticks (20 ms) of CPU in 300 ms, for at most
// 10 s. Without a --pid it waits the least.
func (t *target) settle(least time.Duration) {
	time.Sleep(least)
	if readCPUTicks(t.pid) < 0 {
		return
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		before := readCPUTicks(t.pid)
		time.Sleep(300 * time.Millisecond)
		if after := readCPUTicks(t.pid); after < 0 || after-before <= 2 {
			return
		}
	}
}
