#!/usr/bin/env bash
# Keep one process of the stack running (`make run` wraps every Procfile line in this):
#   bash scripts/respawn.sh NAME COMMAND...
# When COMMAND exits by itself (a crash, a dependency that stayed away too long) it is started
# again after 1 s, doubling to at most 30 s while it keeps failing within 30 s of its start;
# honcho then never sees a process end, so one crash no longer stops the whole platform.
# SIGTERM/SIGINT (honcho's Ctrl-C, sent to the process group) stop COMMAND and this loop.
set -u
name="${1:?usage: respawn.sh NAME COMMAND...}"; shift
stopping=0
child=0
stop() {
  stopping=1
  if [ "$child" -ne 0 ]; then kill -TERM "$child" 2>/dev/null || true; fi
}
trap stop TERM INT
delay=1
while :; do
  started=$(date +%s)
  "$@" &
  child=$!
  wait "$child"; status=$?
  # A trapped signal interrupts `wait`: wait for the child itself to finish.
  while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done
  child=0
  [ "$stopping" -eq 1 ] && exit 0
  ran=$(( $(date +%s) - started ))
  if [ "$ran" -ge 30 ]; then delay=1; fi
  echo "respawn: $name exited with status $status after ${ran}s; starting it again in ${delay}s" >&2
  sleep "$delay" & child=$!
  wait "$child"; child=0
  [ "$stopping" -eq 1 ] && exit 0
  delay=$(( delay * 2 > 30 ? 30 : delay * 2 ))
done
