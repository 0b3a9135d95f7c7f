# shellcheck shell=bash
# The restricted guest network and the agent's state partition, shared by
# the scenarios whose guest agent talks to a server on the host
# (qemu/scenario-agent.sh: a feed; qemu/scenario-ddi.sh: goosebit).
#
# The guest reaches the host only through QEMU user networking with
# restrict=on and a single guestfwd for 10.0.2.100:8080, relayed per
# connection to the host's 127.0.0.1:$GUEST_FWD_PORT (`cmd:` runs relay.py
# for each connection: a `tcp:` target is one chardev connection made at
# start-up, and the agent opens several), so it can reach nothing else
# (docs: /work/shared/docs/QEMU-NOTES.md).
#
# Sourced after qemu/lib.sh and qemu/machine.sh. The scenario sets
# GUEST_FWD_PORT before the first boot and calls write_relay once.

NET_MODULES=(failover net_failover virtio_net)

# The guest's network modules: qemu/build-kernel.sh keeps them in
# kernel/net/ (from the same download as the kernel).
fetch_net_modules() {
  local m
  for m in "${NET_MODULES[@]}"; do
    [[ -f "$BUILD/kernel/net/$m.ko" ]] || fail "no $BUILD/kernel/net/$m.ko: qemu/build-kernel.sh did not keep it"
  done
}

# Every boot of the scenario gets the restricted network: the harness's
# boot() runs qemu-system-x86_64 by name, so this function adds the NIC.
qemu-system-x86_64() {
  command qemu-system-x86_64 "$@" \
    -netdev "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:8080-cmd:$PYTHON $RUN/relay.py ${GUEST_FWD_PORT:?}" \
    -device virtio-net-pci,netdev=n0
}

# relay.py PORT: one guest connection (stdin/stdout) <-> 127.0.0.1:PORT.
write_relay() {
  cat >"$RUN/relay.py" <<'PY'
import os, socket, sys, threading
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def up():
    while True:
        b = os.read(0, 65536)
        if not b:
            break
        s.sendall(b)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while True:
    b = s.recv(65536)
    if not b:
        break
    while b:
        b = b[os.write(1, b):]
PY
}

# Format the DATA partition of $DISK as ext4 (from the host, no mount):
# the slots' /var/lib/slotctl is a tmpfs, and the agent's state (a failed
# version, a DDI action being reported) must survive the reboots. Sets
# DATA_INDEX.
format_data() {
  local i start sectors
  i="$(part_index DATA)" || fail "disk: no DATA partition"
  start="$(cgpt_read b "$i")" || fail "cgpt: cannot read where DATA starts"
  sectors="$(cgpt_read s "$i")" || fail "cgpt: cannot read DATA's size"
  [[ "$start" =~ ^[1-9][0-9]*$ && "$sectors" =~ ^[1-9][0-9]*$ ]] ||
    fail "cgpt gives DATA start '$start' and size '$sectors', not sector counts"
  rm -f "$RUN/data.ext4"
  mkfs.ext4 -q -L DATA "$RUN/data.ext4" "$((sectors / 2))K" || fail "mkfs.ext4 failed for DATA"
  dd if="$RUN/data.ext4" of="$DISK" bs=512 seek="$start" conv=notrunc status=none ||
    fail "cannot write DATA's filesystem into $DISK"
  DATA_INDEX="$i"
}

# The start of the plan every boot runs after its boot check: the network
# modules from the stick, eth0 up, the agent's state partition mounted on
# /tmp/data.
net_and_state_plan() {
  cat <<EOF
for m in ${NET_MODULES[*]}; do insmod /mnt/usb/\$m.ko || say "insmod \$m failed"; done
i=0
while ! ifconfig eth0 >/dev/null 2>&1; do i=\$((i + 1)); [ "\$i" -le 100 ] || break; usleep 50000; done
ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up
mkdir -p /tmp/data
mount -t ext4 /dev/vda$DATA_INDEX /tmp/data || say "cannot mount the agent's state"
EOF
}
