#!/bin/sh
# An inferq worker command: renders a small PNG for a prompt with ImageMagick.
#
#   inferq worker --model demo/render -- ./examples/render-image.sh
#
# Reads the job's payload (a JSON object) on stdin:
#   prompt      text drawn on the image (required)
#   width       pixels, 16 to 2048 (default 256)
#   height      pixels, 16 to 2048 (default 256)
#   output_dir  directory for the image (default $INFERQ_OUTPUT_DIR, then ./renders)
# Reports progress as JSON lines on fd 3 and prints the outputs on stdout:
#   {"path": "/abs/dir/REQUEST_ID.png", "width": 256, "height": 256}
# A bad payload exits 2 with the reason on stderr, which fails the job.
#
# Needs python3 (to read and write JSON) and ImageMagick's convert and identify.
#
# SPDX-License-Identifier: MIT
set -eu

# Writes one progress line to fd 3 when the worker opened it; run by hand, fd 3 is closed.
progress() {
	if { true >&3; } 2>/dev/null; then
		printf '{"progress": %s, "stage": "%s"}\n' "$1" "$2" >&3
	fi
}

payload=$(cat)
progress 0.1 parsing

# The payload's fields as shell-quoted assignments, checked by Python's json module.
fields=$(printf '%s' "$payload" | python3 -c '
import json, shlex, sys
try:
    job = json.load(sys.stdin)
except ValueError as exc:
    sys.exit(f"the payload is not JSON: {exc}")
if not isinstance(job, dict):
    sys.exit("the payload is not a JSON object")
prompt = job.get("prompt")
if not isinstance(prompt, str) or not prompt.strip():
    sys.exit("missing \"prompt\": give the text to draw, as in {\"prompt\": \"a red bicycle\"}")
sizes = {}
for name in ("width", "height"):
    value = job.get(name, 256)
    if not isinstance(value, int) or isinstance(value, bool) or not 16 <= value <= 2048:
        sys.exit(f"invalid \"{name}\" {value!r}: use a whole number of pixels from 16 to 2048")
    sizes[name] = value
out_dir = job.get("output_dir")
if out_dir is not None and (not isinstance(out_dir, str) or not out_dir):
    sys.exit(f"invalid \"output_dir\" {out_dir!r}: use a directory path")
# ImageMagick reads text that starts with "@" from a file and expands "%" escapes.
text = prompt.replace("%", "%%")
if text.startswith("@"):
    text = "\\" + text
print("text=" + shlex.quote(text))
print("width=%d height=%d" % (sizes["width"], sizes["height"]))
print("out_dir=" + shlex.quote(out_dir or ""))
') || exit 2
eval "$fields"

out_dir=${out_dir:-${INFERQ_OUTPUT_DIR:-./renders}}
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
image="$out_dir/${INFERQ_REQUEST_ID:-render-$$}.png"

# A background colour derived from the prompt, so the same prompt gives the same image.
colour=$(printf '%s' "$text" | cksum | awk '{ printf "#%06x", $1 % 16777216 }')
progress 0.3 background

# Any TrueType font will do; without one the image has no text.
font=$(fc-match -f '%{file}' sans 2>/dev/null || true)
if [ -z "$font" ]; then
	font=$(find /usr/share/fonts -name '*.ttf' 2>/dev/null | head -n 1)
fi
pointsize=$((width < height ? width / 12 : height / 12))
if [ -n "$font" ]; then
	convert -size "${width}x${height}" "gradient:$colour-black" -font "$font" \
		-gravity center -pointsize "$pointsize" -fill white \
		-size "$((width * 9 / 10))x" -background none "caption:$text" \
		-composite "$image"
else
	echo "no TrueType font found: rendering without text" >&2
	convert -size "${width}x${height}" "gradient:$colour-black" "$image"
fi
progress 0.9 checking

# The outputs report the size the file really has.
size=$(identify -format '%w %h' "$image")
python3 -c '
import json, sys
print(json.dumps({"path": sys.argv[1], "width": int(sys.argv[2]), "height": int(sys.argv[3])}))
' "$image" $size
progress 1.0 done
