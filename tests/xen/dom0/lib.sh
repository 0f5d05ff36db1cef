# shellcheck shell=bash
# Helpers for scenarios (bash, in dom0). A scenario sources this, and fails by exiting non-zero.
set -euo pipefail

log() { echo "TBX [dom0 +$(cut -d' ' -f1 /proc/uptime)s] $*"; }
fail() { log "FAIL: $*"; exit 1; }

MODDIR=/lib/modules/$(uname -r)
load_module() {  # $1 module, then its parameters
    local m=$1
    shift
    grep -q "^${m//-/_} " /proc/modules || insmod "$MODDIR/$m.ko" "$@" || fail "insmod $m"
}

# Polls a command every 0.2 s until it succeeds; fails after $1 seconds naming $2.
wait_until() {
    local limit=$1 what=$2 n=0
    shift 2
    until "$@"; do
        n=$((n + 1))
        [ $n -le $((limit * 5)) ] || fail "timed out after ${limit}s waiting for $what"
        sleep 0.2
    done
}

# Creates a PV domU running the harness's guest image:
#   create_domu [--vcpus N] [--args 'WORD...'] NAME TEST [DISK...]
# TEST is the guest's test (tokenback.test= in its command line), each DISK an xl disk spec;
# --args adds to the guest kernel's command line (xen_blkfront.NAME=VALUE reaches blkfront).
# DOMU_EXTRA, if set, is added to the guest's command line too (tokenback.fs=, tokenback.bad=).
create_domu() {
    local vcpus=1 args="" disks="" d
    while [ $# -gt 0 ]; do
        case $1 in
            --vcpus) vcpus=$2 ;;
            --args) args=" $2" ;;
            *) break ;;
        esac
        shift 2
    done
    local name=$1 test=$2
    shift 2
    for d in "$@"; do disks+="${disks:+, }'$d'"; done
    cat >"/tmp/$name.cfg" <<CFG
name = "$name"
type = "pv"
memory = 256
vcpus = $vcpus
kernel = "/tokenback/domU/vmlinuz"
ramdisk = "/tokenback/domU/initrd.gz"
extra = "console=hvc0 loglevel=4 rdinit=/init tokenback.test=$test$args${DOMU_EXTRA:+ $DOMU_EXTRA}"
disk = [ $disks ]
on_poweroff = "destroy"
on_crash = "destroy"
CFG
    # xenconsoled appends: a guest of the same name in an earlier scenario left its lines
    : >"/var/log/xen/console/guest-$name.log"
    log "xl create $name: vcpus = $vcpus, disk = [ $disks ]${args:+, kernel arguments:$args}"
    if ! timeout 120 xl create "/tmp/$name.cfg"; then
        tail -n 30 /var/log/xen/*.log
        fail "xl create $name"
    fi
    # the guest's console, streamed with its name as prefix
    tail -F "/var/log/xen/console/guest-$name.log" 2>/dev/null |
        while IFS= read -r line; do echo "$name| ${line%$'\r'}"; done &
    CONSOLE_TAILS+=" $!"
}

# Waits for a domU to power itself off; destroys it and fails after $2 seconds.
wait_domu_gone() {
    local name=$1 limit=$2 n=0
    while xl domid "$name" >/dev/null 2>&1; do
        n=$((n + 1))
        if [ $n -gt "$limit" ]; then
            timeout 60 xl destroy "$name" || true
            fail "$name still running after ${limit}s"
        fi
        sleep 1
    done
    log "$name gone after ${n}s"
    sleep 0.5 # let the console tail print the last lines
}

# Checks that each region the guest $1 reported (DOMU-WROTE disk offset bytes sha256) holds
# those bytes in its backing store; then the backing stores as "disk=path" arguments. A region
# written more than once holds what the last line says.
verify_backing() {
    local glog=/var/log/xen/console/guest-$1.log n=0 a region
    shift
    local -A backing=() last=()
    for a in "$@"; do backing[${a%%=*}]=${a#*=}; done
    while read -r _ disk off len sha; do
        last["$disk $off $len"]=$sha
    done < <(grep '^DOMU-WROTE ' "$glog" | tr -d '\r')
    for region in "${!last[@]}"; do
        read -r disk off len <<<"$region"
        [ -n "${backing[$disk]:-}" ] || fail "$disk: no backing store given"
        got=$(dd if="${backing[$disk]}" bs="$len" count=1 skip="$off" iflag=skip_bytes \
            2>/dev/null | sha256sum | cut -d' ' -f1)
        [ "$got" = "${last[$region]}" ] ||
            fail "$disk $off+$len: backing store differs from what the guest wrote"
        n=$((n + 1))
    done
    [ $n -ge $((6 * $#)) ] || fail "only $n regions reported by the guest for $# disk(s)"
    for a in "$@"; do
        grep -q "^DOMU-WROTE ${a%%=*} " "$glog" || fail "no region reported for ${a%%=*}"
    done
    log "dom0 found all $n regions in the backing stores"
}

# Rates a guest measures with its meter test: "DOMU-METER DISK UPTIME READS" every 0.5 s.
# meter_samples GUEST DISK: "UPTIME READS", one sample a line.
meter_samples() {
    tr -d '\r' <"/var/log/xen/console/guest-$1.log" |
        awk -v d="$2" '$1 == "DOMU-METER" && $2 == d { print $3, $4 }'
}
meter_has() { [ "$(meter_samples "$1" "$2" | wc -l)" -ge "$3" ]; }
meter_past() { meter_samples "$1" "$2" | awk -v t="$3" '$1 >= t { f = 1 } END { exit !f }'; }
declare -A WINDOW_FROM=()
# Opens a window on guest $1's disk $2 at its second sample from now, so that what was in
# flight or queued when a limit changed has settled.
window_open() {
    local n
    n=$(meter_samples "$1" "$2" | wc -l)
    wait_until 60 "two more samples of $1's $2" meter_has "$1" "$2" $((n + 2))
    WINDOW_FROM[$1/$2]=$(meter_samples "$1" "$2" | sed -n "$((n + 2))p")
}
# RATE: the reads per second guest $1 measured on $2 over $3 seconds of its clock from the
# window's start.
window_close() {
    local t1 r1 t2 r2 end
    read -r t1 r1 <<<"${WINDOW_FROM[$1/$2]}"
    end=$(awk -v t="$t1" -v s="$3" 'BEGIN { print t + s }')
    wait_until $(($3 * 3 + 30)) "$3 s of $1's samples of $2" meter_past "$1" "$2" "$end"
    read -r t2 r2 < <(meter_samples "$1" "$2" | awk -v t="$end" '$1 >= t' | head -1)
    RATE=$(awk -v a="$r1" -v b="$r2" -v s="$t1" -v e="$t2" 'BEGIN { printf "%.1f", (b - a) / (e - s) }')
    log "$1's $2: $RATE reads/s over $(awk -v s="$t1" -v e="$t2" 'BEGIN { print e - s }') s of its clock"
}
measure() { window_open "$1" "$2" && window_close "$1" "$2" "$3"; }
# Seconds to measure a rate of about $1 a second over: 24 reads at least (the samples' timing
# and a read more or less count little then), 2 s at least.
window_for() { awk -v r="$1" 'BEGIN { s = int(24 / r + 0.999); print (s < 2 ? 2 : s) }'; }
# Exits 0 when rate $1 is within $2 to $3 times $4.
within() { awk -v r="$1" -v lo="$2" -v hi="$3" -v l="$4" 'BEGIN { exit !(r >= lo * l && r <= hi * l) }'; }

# Starts tokenbackd (release build, /tokenback/bin) with its log on the console, prefixed,
# and in /tmp/tokenbackd.log; TOKENBACKD is its pid; the arguments are tokenbackd's. Kernel
# xen-blkback must not be loaded (tokenbackd refuses).
# shellcheck disable=SC2120 # the arguments are optional
start_tokenbackd() {
    ! grep -q '^xen_blkback ' /proc/modules || fail "xen-blkback is loaded"
    : >/tmp/tokenbackd.log
    tokenbackd --log-level debug "$@" > >(tee -a /tmp/tokenbackd.log |
        while IFS= read -r line; do echo "tokenbackd| $line"; done) 2>&1 &
    TOKENBACKD=$!
    # dom0's init stops it if this scenario is killed before its EXIT trap could
    echo "$TOKENBACKD" >/run/tokenbackd.pid
    wait_until 20 "tokenbackd serving" tokenbackd_serving
    log "tokenbackd (pid $TOKENBACKD) serving"
}
tokenbackd_alive() { kill -0 "$TOKENBACKD" 2>/dev/null; }
# Grant mappings tokenbackd holds: gntdev mmaps in its address space (the kernel does not
# merge them: gntdev's mappings have a close operation).
tokenbackd_mappings() { grep -c /dev/xen/gntdev "/proc/$TOKENBACKD/maps" || true; }
# Its open file descriptors.
tokenbackd_fds() {
    local fds=("/proc/$TOKENBACKD/fd"/*)
    echo ${#fds[@]}
}
# Event channels it has bound: /dev/xen/evtchn names each binding's interrupt
# evtchn:<command> after the thread that opened the device.
tokenbackd_evtchns() {
    local comms
    comms=$(sed 's/^/evtchn:/' "/proc/$TOKENBACKD"/task/*/comm | sort -u | paste -sd'|')
    grep -cE " ($comms)\$" /proc/interrupts || true
}
tokenbackd_serving() {
    tokenbackd_alive || fail "tokenbackd exited"
    grep -q serving /tmp/tokenbackd.log
}
# SIGTERM: tokenbackd finishes what is in flight and exits 0.
stop_tokenbackd() {
    local rc=0 watchdog
    kill -TERM "$TOKENBACKD"
    (sleep 20 && kill -KILL "$TOKENBACKD") 2>/dev/null &
    watchdog=$!
    wait "$TOKENBACKD" || rc=$?
    kill "$watchdog" 2>/dev/null || true
    [ $rc != 137 ] || fail "tokenbackd did not stop within 20 s of SIGTERM"
    TOKENBACKD=""
    [ $rc = 0 ] || fail "tokenbackd exited with status $rc on SIGTERM"
    log "tokenbackd stopped"
}

stop_console_tails() {
    # shellcheck disable=SC2086 # a list of pids
    [ -z "${CONSOLE_TAILS:-}" ] || kill $CONSOLE_TAILS 2>/dev/null || true
}
# A scenario that fails leaves no tokenbackd for the next one to meet (two daemons on one
# tree fight over every VBD).
on_exit() {
    if [ -n "${TOKENBACKD:-}" ] && tokenbackd_alive; then
        log "stopping tokenbackd left running"
        kill -TERM "$TOKENBACKD" 2>/dev/null || true
        sleep 1
        kill -KILL "$TOKENBACKD" 2>/dev/null || true
    fi
    stop_console_tails
}
trap on_exit EXIT
CONSOLE_TAILS=""
