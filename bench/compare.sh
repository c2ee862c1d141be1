#!/usr/bin/env bash
# bench/compare.sh: ggbroker against Mosquitto 2, the same load, one after the other, in one run.
#
#   bench/compare.sh [--quick] [--out DIR] [--keep] [--paho]
#
# The pub/sub load is written as raw MQTT packets in batches (ggbench --raw), cheap enough that the
# brokers, not the load tool, are the limit; --paho uses paho clients instead (the figures before
# issue 16, where paho was the limit of a QoS 0 flood).
# Installs Mosquitto if missing, builds ggbroker and ggbench, makes a fresh ggbroker state directory
# with the benchmark devices (their policy: bench/ggbench-policy.json), configures Mosquitto with the
# same mutual TLS settings (require_certificate, use_identity_as_username, ggbroker's device CA as
# cafile, ggbroker's server certificate and key) and the equivalent ACL (bench/mosquitto.acl), then
# runs `ggbench suite` against:
#   mosquitto          mTLS + ACL (and a plain TCP listener for the TCP baseline); first, because half
#                      of its top QoS 0 fan-in rate is the fixed rate of fanin-qos0-at-rate for all
#   nullbroker         ../shared/tools/nullbroker, the pub/sub scenarios only: the machine's limit
#   ggbroker-policy    authorization.mode: policies (AWS IoT policy checked on connect, publish,
#                      subscribe and every delivery)
#   ggbroker-allowall  authorization.mode: allow-all
#   ggbroker-persist   policies with persistence on: ggbroker's defaults
# and prints each report and the ratios, including each broker's share of the null broker's figure.
# Everything listens on 127.0.0.1 on free ports; every process it starts is killed on exit. Full run:
# under 10 minutes; --quick: under 3.
set -euo pipefail

quick=""
keep=""
out=""
load="--raw"
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) quick="--quick" ;;
	--keep) keep=1 ;;
	--paho) load="" ;;
	--out) out="$2"; shift ;;
	-h | --help) sed -n '2,23p' "$0"; exit 0 ;;
	*) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

repo="$(cd "$(dirname "$0")/.." && pwd)"
bench="$repo/bench"
work="$(mktemp -d /tmp/ggbench-compare.XXXXXX)"
[ -n "$out" ] || out="$work/results"
mkdir -p "$out"

pids=()
cleanup() {
	local rc=$?
	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		# bounded wait, then SIGKILL
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null || true
	done
	if [ -z "$keep" ]; then
		rm -rf "$work/state" "$work/probe"
	fi
	echo "compare.sh: work directory $work (results in $out)" >&2
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "compare.sh: $*" >&2; }

# --- Mosquitto -----------------------------------------------------------------------------------
mosq="$(command -v mosquitto || true)"
[ -n "$mosq" ] || [ ! -x /usr/sbin/mosquitto ] || mosq=/usr/sbin/mosquitto
if [ -z "$mosq" ]; then
	log "installing mosquitto"
	apt-get install -y mosquitto >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y mosquitto >/dev/null; }
	mosq="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
fi
mosq_version="$("$mosq" -h 2>/dev/null | head -1 || true)"

# --- build ---------------------------------------------------------------------------------------
log "building ggbroker and ggbench"
(cd "$repo" && go build -o "$work/ggbroker" ./cmd/ggbroker && go build -o "$work/ggbench" ./cmd/ggbench)
ggbroker="$work/ggbroker"
ggbench="$work/ggbench"

# 10,000 idle clients need more than the usual 1024 descriptors, in the brokers and in ggbench.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

idle=10000
[ -z "$quick" ] || idle=2000
suite_args=($quick $load --idle "$idle" --timeout 10s --max-duration 90s)

# --- ggbroker state: CAs, devices, the policy --------------------------------------------------
state="$work/state"
"$ggbench" provision --state-dir "$state" --count "$idle" --policy ggbench
mkdir -p "$state/policies"
cp "$bench/ggbench-policy.json" "$state/policies/ggbench.json"

wait_port() { # wait_port PORT PID: until the port accepts connections, at most 20 s
	for _ in $(seq 200); do
		kill -0 "$2" 2>/dev/null || return 1
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

stop() { # stop PID
	kill -TERM "$1" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

ggbroker_config() { # ggbroker_config MODE PORT FILE
	sed -e "s|@STATE@|$state|" -e "s|@PORT@|$2|" -e "s|@MODE@|$1|" "$bench/ggbroker.yaml.in" >"$3"
}

start_ggbroker() { # start_ggbroker NAME MODE [ENV=VALUE...]: sets port and pid
	local name="$1" mode="$2"
	shift 2
	port="$("$ggbench" freeport)"
	ggbroker_config "$mode" "$port" "$work/$name.yaml"
	env "$@" "$ggbroker" serve --config "$work/$name.yaml" >"$work/$name.log" 2>&1 &
	pid=$!
	pids+=("$pid")
	if ! wait_port "$port" "$pid"; then
		log "$name did not start; its log:"
		tail -20 "$work/$name.log" >&2
		stop "$pid"
		return 1
	fi
}

run_suite() { # run_suite NAME PORT PID [ARGS...]
	local name="$1" port="$2" p="$3"
	shift 3
	log "$name: ggbench suite on 127.0.0.1:$port (pid $p)"
	"$ggbench" suite "${suite_args[@]}" --label "$name" --addr "127.0.0.1:$port" --pid "$p" \
		--json-file "$out/$name.json" "$@" | tee "$out/$name.txt"
}

# --- Mosquitto (first: its top QoS 0 fan-in rate sets the fixed rate of fanin-qos0-at-rate) ----
# Mosquitto and the null broker serve ggbroker's server certificate, which ggbroker's first start makes.
start_ggbroker ggbroker-init allow-all
stop "$pid"
mport="$("$ggbench" freeport)"
tport="$("$ggbench" freeport)"
while [ "$tport" = "$mport" ]; do tport="$("$ggbench" freeport)"; done
user_line=""
[ "$(id -u)" != 0 ] || user_line="user root"
sed -e "s|@PORT@|$mport|" -e "s|@TCP_PORT@|$tport|" -e "s|@LOG@|$work/mosquitto.log|" -e "s|@USER@|$user_line|" \
	-e "s|@DEVICE_CA@|$state/ca/device-ca.pem|" -e "s|@SERVER_CERT@|$state/server/server.pem|" \
	-e "s|@SERVER_KEY@|$state/server/server.key|" -e "s|@ACL@|$bench/mosquitto.acl|" \
	"$bench/mosquitto.conf.in" >"$work/mosquitto.conf"
"$mosq" -c "$work/mosquitto.conf" >"$work/mosquitto.stdout" 2>&1 &
mpid=$!
pids+=("$mpid")
if ! wait_port "$mport" "$mpid"; then
	log "mosquitto did not start:"
	cat "$work/mosquitto.stdout" "$work/mosquitto.log" >&2 || true
	exit 1
fi
mosq_clients=(--cert-dir "$state/ggbench-devices" --ca "$state/ca/core-ca.pem")
log "mosquitto: calibrating its top QoS 0 fan-in rate (20 -> 1, 3 s)"
top="$("$ggbench" pubsub $load --addr "127.0.0.1:$mport" "${mosq_clients[@]}" --shape fanin --pubs 20 --subs 1 --qos 0 \
	--size 64 --topics 1 --duration 3s --json 2>/dev/null | grep -o '"recvPerSec": *[0-9.]*' | head -1 | grep -o '[0-9.]*$' || true)"
at_rate="$(awk -v t="${top:-0}" 'BEGIN { r = int(t / 2); if (r < 2000) r = 2000; print r }')"
log "mosquitto: top rate ${top:-unknown} msgs/s; fanin-qos0-at-rate runs at $at_rate msgs/s for every broker"
suite_args+=(--at-rate "$at_rate")
run_suite mosquitto "$mport" "$mpid" "${mosq_clients[@]}" --tcp-addr "127.0.0.1:$tport"
stop "$mpid"

# --- the null broker: what this machine allows for the same pub/sub load -------------------------
# ../shared/tools/nullbroker forwards PUBLISH over the same mTLS with coalesced writes and does
# nothing else (no topic matching, no sessions, no policy): a broker's figure divided by its figure
# is the share of the limit.
null_status="not measured: ../shared/tools/nullbroker is not there"
nullsrc="$repo/../shared/tools/nullbroker"
if [ -f "$nullsrc/main.go" ]; then
	null_status="not measured: it did not build (see $work/nullbroker.build)"
	if (cd "$nullsrc" && GOFLAGS= go build -o "$work/nullbroker" .) 2>"$work/nullbroker.build"; then
		nport="$("$ggbench" freeport)"
		"$work/nullbroker" -addr "127.0.0.1:$nport" -cert "$state/server/server.pem" -key "$state/server/server.key" \
			-ca "$state/ca/device-ca.pem" >"$work/nullbroker.log" 2>&1 &
		npid=$!
		pids+=("$npid")
		null_status="not measured: it did not start"
		if wait_port "$nport" "$npid"; then
			null_status="measured"
			run_suite nullbroker "$nport" "$npid" "${mosq_clients[@]}" --only fanin-qos0,fanin-qos1,fanout-qos0,fanout-qos1,fanin-qos0-at-rate
		fi
		stop "$npid"
	fi
fi

# --- ggbroker, policy on -----------------------------------------------------------------------
# Policies are being wired in: check that they are enforced end to end before measuring them. A
# device with no policy attached must be refused (iot:Connect is implicitly denied).
policy_status="pending"
if start_ggbroker ggbroker-policy policies; then
	probe="$("$ggbench" connect --addr "127.0.0.1:$port" --state-dir "$state" --cert-dir "$work/probe" \
		--device-prefix ggprobe- --policy "" --count 1 --json 2>/dev/null || true)"
	allowed="$("$ggbench" connect --addr "127.0.0.1:$port" --state-dir "$state" --count 1 --json 2>/dev/null || true)"
	if grep -q '"succeeded": 1' <<<"$probe"; then
		log "ggbroker-policy: a device with no policy connected: policies are not enforced yet; policy-on figures pending"
	elif ! grep -q '"succeeded": 1' <<<"$allowed"; then
		log "ggbroker-policy: a device with the ggbench policy was refused; policy-on figures pending"
		grep -o '"errorExamples": \[[^]]*' <<<"$allowed" >&2 || true
	else
		policy_status="measured"
		run_suite ggbroker-policy "$port" "$pid" --state-dir "$state"
	fi
	stop "$pid"
fi

# --- ggbroker, allow-all -----------------------------------------------------------------------
start_ggbroker ggbroker-allowall allow-all
run_suite ggbroker-allowall "$port" "$pid" --state-dir "$state"
stop "$pid"

# --- ggbroker, persistence on (only if the config has such a key) ------------------------------
persistence_status="not measured: configs/ggbroker.yaml has no persistence key"
if grep -qE '^persistence:' "$repo/configs/ggbroker.yaml" && grep -A5 -E '^persistence:' "$repo/configs/ggbroker.yaml" | grep -qE '^\s+enabled:'; then
	if start_ggbroker ggbroker-persist policies GGBROKER_PERSISTENCE_ENABLED=true; then
		persistence_status="measured (persistence.enabled=true, policies)"
		run_suite ggbroker-persist "$port" "$pid" --state-dir "$state" --skip idle,connect-burst-tcp,fanin-qos0-tcp
		stop "$pid"
	else
		persistence_status="not measured: ggbroker did not start with persistence.enabled=true"
	fi
fi

# --- ratios --------------------------------------------------------------------------------------
echo
echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); $mosq_version; $(go version | cut -d' ' -f3)"
if [ "$policy_status" = measured ]; then
	echo
	echo "== ggbroker (policy on) / Mosquitto (mTLS + ACL)"
	"$ggbench" compare "$out/ggbroker-policy.json" "$out/mosquitto.json"
	echo
	echo "== ggbroker policy on / allow-all"
	"$ggbench" compare "$out/ggbroker-policy.json" "$out/ggbroker-allowall.json"
else
	echo
	echo "== ggbroker policy on: PENDING (policies not enforced end to end in this build)"
fi
echo
echo "== ggbroker (allow-all) / Mosquitto (mTLS + ACL)"
"$ggbench" compare "$out/ggbroker-allowall.json" "$out/mosquitto.json"
if [ -f "$out/ggbroker-persist.json" ]; then
	echo
	echo "== ggbroker persistence on / off (policies)"
	"$ggbench" compare "$out/ggbroker-persist.json" "$out/ggbroker-policy.json"
fi
if [ -f "$out/ggbroker-persist.json" ]; then
	echo
	echo "== ggbroker persistence on / Mosquitto (no persistence): the QoS 1 fan-in goal is >= 0.5"
	"$ggbench" compare "$out/ggbroker-persist.json" "$out/mosquitto.json"
fi
if [ "$null_status" = measured ]; then
	for v in ggbroker-policy ggbroker-allowall mosquitto; do
		[ -f "$out/$v.json" ] || continue
		echo
		echo "== $v / the null broker: the share of what this machine allows"
		"$ggbench" compare "$out/$v.json" "$out/nullbroker.json"
	done
fi
echo
echo "== null broker: $null_status"
echo "== persistence: $persistence_status"
echo "== JSON reports: $out"
