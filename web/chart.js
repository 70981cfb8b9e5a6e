// A small time-series line chart drawn on a canvas.
//
// The x axis ends at now and spans the time since the first sample, at least one minute and at
// most windowMs. The y axis starts at 0 and ends at a round number above the largest value. A null value leaves a gap in its line,
// which is how a missing sample (a failed refresh, or a rate with no earlier sample) shows.
//
// SPDX-License-Identifier: MIT

const PAD = { left: 52, right: 12, top: 28, bottom: 22 };
const FONT = '12px system-ui, sans-serif';
const GRID_LINES = 4;
const MIN_SPAN_MS = 60000;
// Time axis label steps; the smallest that gives at most MAX_TICKS labels is used.
const TICK_STEPS_MS = [10000, 15000, 30000, 60000, 120000, 300000, 600000];
const MAX_TICKS = 6;

/**
 * Returns the smallest of 1, 2, 4, 6 or 8 times a power of ten that is at least value: each
 * divides into GRID_LINES round grid values.
 */
export function niceCeiling(value) {
	if (!(value > 0)) return 1;
	const power = 10 ** Math.floor(Math.log10(value));
	for (const step of [1, 2, 4, 6, 8, 10]) {
		if (step * power >= value) return step * power;
	}
	return 10 * power;
}

function formatValue(value) {
	if (value >= 1000) return `${(value / 1000).toFixed(value >= 10000 ? 0 : 1)}k`;
	if (Number.isInteger(value)) return String(value);
	if (value < 1) return String(Number(value.toFixed(2)));
	return value.toFixed(value < 10 ? 1 : 0);
}

export class LineChart {
	/**
	 * series: [{ name, color }], one per entry of each sample's values array; unit is
	 * appended to the legend values ("jobs", "jobs/s").
	 */
	constructor(canvas, { series, unit, windowMs }) {
		this.canvas = canvas;
		this.series = series;
		this.unit = unit;
		this.windowMs = windowMs;
	}

	/** Draws samples ([{ at: ms since epoch, values: [number|null, ...] }], oldest first). */
	draw(samples, now = Date.now()) {
		const { canvas } = this;
		const ratio = window.devicePixelRatio || 1;
		const width = canvas.clientWidth;
		const height = canvas.clientHeight;
		if (width === 0 || height === 0) return;
		if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
			canvas.width = Math.round(width * ratio);
			canvas.height = Math.round(height * ratio);
		}
		const ctx = canvas.getContext('2d');
		ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
		ctx.clearRect(0, 0, width, height);
		ctx.font = FONT;

		const visible = samples.filter((s) => s.at >= now - this.windowMs);
		const oldest = visible.length ? visible[0].at : now;
		const span = Math.min(this.windowMs, Math.max(MIN_SPAN_MS, now - oldest));
		let max = 0;
		for (const s of visible) {
			for (const v of s.values) if (v !== null && v > max) max = v;
		}
		const top = niceCeiling(max);
		const plot = {
			x: PAD.left,
			y: PAD.top,
			w: width - PAD.left - PAD.right,
			h: height - PAD.top - PAD.bottom,
		};
		const xOf = (at) => plot.x + plot.w * (1 - (now - at) / span);
		const yOf = (v) => plot.y + plot.h * (1 - v / top);

		this.drawGrid(ctx, plot, top, yOf);
		this.drawTimeAxis(ctx, plot, span, now, xOf);
		this.series.forEach((line, index) => this.drawLine(ctx, visible, index, line.color, xOf, yOf));
		this.drawLegend(ctx, visible, width);
	}

	drawGrid(ctx, plot, top, yOf) {
		ctx.strokeStyle = '#d8dde3';
		ctx.fillStyle = '#5b6470';
		ctx.lineWidth = 1;
		ctx.textAlign = 'right';
		ctx.textBaseline = 'middle';
		for (let i = 0; i <= GRID_LINES; i++) {
			const value = (top * i) / GRID_LINES;
			const y = Math.round(yOf(value)) + 0.5;
			ctx.beginPath();
			ctx.moveTo(plot.x, y);
			ctx.lineTo(plot.x + plot.w, y);
			ctx.stroke();
			ctx.fillText(formatValue(value), plot.x - 6, y);
		}
	}

	drawTimeAxis(ctx, plot, span, now, xOf) {
		const step = TICK_STEPS_MS.find((ms) => span / ms <= MAX_TICKS) || TICK_STEPS_MS[TICK_STEPS_MS.length - 1];
		ctx.fillStyle = '#5b6470';
		ctx.textAlign = 'center';
		ctx.textBaseline = 'top';
		for (let ago = 0; ago <= span; ago += step) {
			const label = ago === 0 ? 'now' : ago < 60000 ? `-${ago / 1000} s` : `-${ago / 60000} min`;
			const x = Math.min(Math.max(xOf(now - ago), plot.x + 16), plot.x + plot.w - 12);
			ctx.fillText(label, x, plot.y + plot.h + 6);
		}
	}

	drawLine(ctx, samples, index, color, xOf, yOf) {
		ctx.strokeStyle = color;
		ctx.lineWidth = 2;
		ctx.lineJoin = 'round';
		ctx.beginPath();
		let drawing = false;
		for (const s of samples) {
			const v = s.values[index];
			if (v === null || v === undefined) {
				drawing = false;
				continue;
			}
			const x = xOf(s.at);
			const y = yOf(v);
			if (drawing) ctx.lineTo(x, y);
			else ctx.moveTo(x, y);
			drawing = true;
		}
		ctx.stroke();
	}

	drawLegend(ctx, samples, width) {
		const last = samples.length ? samples[samples.length - 1].values : [];
		let x = PAD.left;
		ctx.textAlign = 'left';
		ctx.textBaseline = 'middle';
		this.series.forEach((line, index) => {
			const v = last[index];
			const label = `${line.name} ${v === null || v === undefined ? '–' : formatValue(v)} ${this.unit}`;
			ctx.fillStyle = line.color;
			ctx.fillRect(x, 9, 10, 10);
			ctx.fillStyle = '#1d232a';
			ctx.fillText(label, x + 14, 14);
			x += ctx.measureText(label).width + 30;
			if (x > width) x = width;
		});
	}
}
