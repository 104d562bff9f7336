#!/usr/bin/env bash
# Manual check (issue 5) that the real window opens and responds, on a machine without a desktop: starts
# Xvfb on a free display, opens `avflow` (the bundled demo) there, waits for its window, presses the heatmap
# shortcut (Ctrl+Shift+H), clicks on the heatmap until a click knocks a band out of the answer, and captures
# the screen before and after. Passes when the window appeared, the pictures are not blank, the key changed
# the picture, a click on the heatmap gave a knockout, and the app is still running.
#
# Builds nothing: run `cargo build` first (it uses target/debug/avflow, or $AVFLOW_BIN). Not part of CI
# (the rendered kittests cover the panels); run it after changes to start-up, windowing or the renderer.
#
#   bash tools/xvfb_check.sh [OUT.png]     # default target/xvfb-check.png (the picture after the key press)
#
# WGPU_BACKEND=vulkan (default, Mesa's lavapipe) or gl (llvmpipe through EGL). Needs xvfb, xdotool and
# imagemagick (apt-get install -y xvfb xdotool imagemagick mesa-vulkan-drivers).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${AVFLOW_BIN:-$root/target/debug/avflow}"
out="${1:-$root/target/xvfb-check.png}"
wait_s="${AVFLOW_XVFB_WAIT:-20}"

[ -x "$bin" ] || { echo "no $bin: run cargo build first" >&2; exit 2; }
for t in Xvfb xdotool import convert compare; do
    command -v "$t" >/dev/null || {
        echo "$t is missing: apt-get install -y xvfb xdotool imagemagick" >&2
        exit 2
    }
done

# A display nobody uses.
d=99
while [ -e "/tmp/.X11-unix/X$d" ] || [ -e "/tmp/.X$d-lock" ]; do d=$((d + 1)); done
work="$(mktemp -d /tmp/avflow-xvfb.XXXXXX)"
xpid=""
apid=""
cleanup() {
    [ -n "$apid" ] && kill "$apid" 2>/dev/null || true
    [ -n "$xpid" ] && kill "$xpid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

Xvfb ":$d" -screen 0 1280x900x24 -nolisten tcp >"$work/xvfb.log" 2>&1 &
xpid=$!
export DISPLAY=":$d"
for _ in $(seq 50); do
    xdotool getdisplaygeometry >/dev/null 2>&1 && break
    sleep 0.1
done
xdotool getdisplaygeometry >/dev/null || { echo "Xvfb did not start:" >&2; cat "$work/xvfb.log" >&2; exit 1; }

# A fresh settings folder: the demo opens, not whatever was open last time.
mkdir -p "$work/data" "$work/run"
chmod 700 "$work/run"
# RUST_LOG=warn: egui_wgpu names the adapter it got (a software one here) at that level.
XDG_DATA_HOME="$work/data" XDG_RUNTIME_DIR="$work/run" WGPU_BACKEND="${WGPU_BACKEND:-vulkan}" \
    RUST_LOG="${RUST_LOG:-warn,avflow=info}" "$bin" >"$work/app.log" 2>&1 &
apid=$!

wid="$(timeout 60 xdotool search --sync --name '^avflow$' | head -1 || true)"
if [ -z "$wid" ]; then
    echo "FAIL: no avflow window within 60 s; the app said:" >&2
    cat "$work/app.log" >&2
    exit 1
fi
echo "window $wid on :$d ($(xdotool getwindowgeometry "$wid" | tr '\n' ' '))"
sed -n 's/.*\(backend: [A-Za-z]*\).*name: \("[^"]*"\).*/adapter: \1, \2/p' "$work/app.log" | head -1

# The demo loads and answers in the worker; then the picture settles.
sleep "$wait_s"
kill -0 "$apid" 2>/dev/null || { echo "FAIL: avflow exited:" >&2; cat "$work/app.log" >&2; exit 1; }
import -window root "$work/before.png"

# Keyboard: focus the window (there is no window manager) and press Ctrl+Shift+H through XTEST, as a
# keyboard would: the heatmap scrolls into view and computes.
xdotool windowfocus --sync "$wid" 2>/dev/null || xdotool windowfocus "$wid"
xdotool key --clearmodifiers ctrl+shift+h
sleep "$((wait_s / 2 + 1))"
import -window root "$work/after.png"

# The window's part of the screen (the root window is larger and black around it).
eval "$(xdotool getwindowgeometry --shell "$wid")"
crop() { convert "$1" -crop "${WIDTH}x${HEIGHT}+${X}+${Y}" +repage "$2"; }
crop "$work/before.png" "$work/before-w.png"
crop "$work/after.png" "$work/after-w.png"
std_of() { convert "$1" -format '%[fx:standard_deviation]' info:; }
changed="$(compare -metric AE "$work/before-w.png" "$work/after-w.png" null: 2>&1 || true)"
std_before="$(std_of "$work/before-w.png")"
std_after="$(std_of "$work/after-w.png")"
cp "$work/after-w.png" "$out"
echo "standard deviation: before $std_before, after $std_after; pixels changed by the key press: $changed"

# Mouse: clicks down the middle of the heatmap pane (the centre column of the default workspace) until
# one lands on the cells: the app logs the knockout it then shows ("knockout shown", the run under the
# pointer knocked out of the answer).
eval "$(xdotool getwindowgeometry --shell "$wid")"
hx=$((WIDTH * 50 / 100))
knocked=""
for y in $(seq $((HEIGHT * 15 / 100)) 12 $((HEIGHT * 70 / 100))); do
    xdotool mousemove --window "$wid" "$hx" "$y" click 1
    sleep 1
    if grep -q "knockout shown" "$work/app.log"; then
        knocked="$(grep "knockout shown" "$work/app.log" | tail -1 | sed 's/.*knockout shown//')"
        echo "a click at ($hx, $y) on the heatmap knocked out:$knocked"
        import -window root "$work/knocked.png"
        convert "$work/knocked.png" -crop "${WIDTH}x${HEIGHT}+${X}+${Y}" +repage "${out%.png}-knockout.png"
        break
    fi
done
sleep 1

fail=0
awk -v s="$std_before" 'BEGIN { exit !(s > 0.02) }' || { echo "FAIL: the window looks blank before the key press" >&2; fail=1; }
awk -v s="$std_after" 'BEGIN { exit !(s > 0.02) }' || { echo "FAIL: the window looks blank after the key press" >&2; fail=1; }
[ "${changed%% *}" != "0" ] || { echo "FAIL: Ctrl+Shift+H changed nothing on screen" >&2; fail=1; }
[ -n "$knocked" ] || { echo "FAIL: no click on the heatmap gave a knockout" >&2; fail=1; }
kill -0 "$apid" 2>/dev/null || { echo "FAIL: avflow exited after the input:" >&2; cat "$work/app.log" >&2; fail=1; }
if [ "$fail" = 0 ]; then
    echo "OK: the window opened, rendered, responded to Ctrl+Shift+H, a click on the heatmap knocked out a band, and it is still running; pictures: $out, ${out%.png}-knockout.png"
else
    echo "app log:" >&2
    tail -20 "$work/app.log" >&2
fi
exit "$fail"
