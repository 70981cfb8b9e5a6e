// The Queues view: one row per model with its jobs by status and its waiting workers, a
// button to clear the model's pending jobs, and two charts of the last minutes: queue depth
// (pending and running jobs over all models, up to the last 10 minutes) and throughput (jobs per second submitted,
// completed and failed, derived from the *_total counters of two consecutive samples).
//
// SPDX-License-Identifier: MIT

import { api } from './api.js';
import { LineChart } from './chart.js';
import { askConfirm, el, showBanner, timeCell } from './dom.js';

export const WINDOW_MS = 10 * 60 * 1000;
// A gap longer than this between two samples (failed refreshes, a hidden tab) breaks the lines.
const MAX_SAMPLE_GAP_MS = 10000;
const TOTALS = ['submitted_total', 'completed_total', 'failed_total'];

/** The samples of GET /v1/admin/queues taken in this tab, oldest first. */
export class QueueSampler {
	constructor() {
		this.samples = [];
	}

	/** Fetches the queues and records them; throws the ApiError of a failed fetch. */
	async poll() {
		const body = await api.queues();
		const rows = Array.isArray(body?.data) ? body.data : [];
		this.add(rows, Date.now());
		return rows;
	}

	add(rows, at) {
		this.samples.push({ at, rows });
		while (this.samples.length && this.samples[0].at < at - WINDOW_MS - MAX_SAMPLE_GAP_MS) {
			this.samples.shift();
		}
	}

	latest() {
		return this.samples.length ? this.samples[this.samples.length - 1].rows : null;
	}

	/** [{ at, values: [pending, running] }] summed over every model. */
	depthSeries() {
		return this.samples.map(({ at, rows }) => ({
			at,
			values: [sum(rows, 'pending'), sum(rows, 'running')],
		}));
	}

	/**
	 * [{ at, values: [submitted/s, completed/s, failed/s] }] from each pair of consecutive
	 * samples. A counter that went down (the server restarted) or a long gap gives null.
	 */
	rateSeries() {
		const out = [];
		for (let i = 1; i < this.samples.length; i++) {
			const before = this.samples[i - 1];
			const now = this.samples[i];
			const seconds = (now.at - before.at) / 1000;
			const values = TOTALS.map((field) => {
				if (now.at - before.at > MAX_SAMPLE_GAP_MS || seconds <= 0) return null;
				const delta = sum(now.rows, field) - sum(before.rows, field);
				return delta < 0 ? null : delta / seconds;
			});
			out.push({ at: now.at, values });
		}
		return out;
	}
}

function sum(rows, field) {
	return rows.reduce((total, row) => total + (Number(row[field]) || 0), 0);
}

const COUNTS = ['pending', 'running', 'done', 'failed', 'canceled', 'waiting_workers'];

export class QueuesView {
	constructor(container, ctx) {
		this.ctx = ctx;
		this.sampler = ctx.sampler;
		this.depthCanvas = el('canvas', { class: 'chart', 'data-testid': 'depth-chart', role: 'img', 'aria-label': 'Queue depth over the last minutes' });
		this.rateCanvas = el('canvas', { class: 'chart', 'data-testid': 'rate-chart', role: 'img', 'aria-label': 'Throughput over the last minutes' });
		this.depthChart = new LineChart(this.depthCanvas, {
			unit: 'jobs',
			windowMs: WINDOW_MS,
			series: [
				{ name: 'pending', color: '#d97706' },
				{ name: 'running', color: '#2563eb' },
			],
		});
		this.rateChart = new LineChart(this.rateCanvas, {
			unit: 'jobs/s',
			windowMs: WINDOW_MS,
			series: [
				{ name: 'submitted', color: '#7c3aed' },
				{ name: 'completed', color: '#16a34a' },
				{ name: 'failed', color: '#dc2626' },
			],
		});
		this.tbody = el('tbody');
		this.empty = el('p', { class: 'muted', hidden: true }, 'No queues yet. A model appears here once a job names it.');
		container.replaceChildren(
			el('h1', {}, 'Queues'),
			el('div', { class: 'charts' },
				el('figure', {}, el('figcaption', {}, 'Queue depth, all models'), this.depthCanvas),
				el('figure', {}, el('figcaption', {}, 'Throughput, all models'), this.rateCanvas)),
			el('table', { class: 'grid', 'data-testid': 'queues-table' },
				el('thead', {}, el('tr', {},
					el('th', {}, 'Model'),
					COUNTS.map((c) => el('th', { class: 'num' }, c.replace('_', ' '))),
					el('th', {}, 'Oldest pending'),
					el('th', {}, ''))),
				this.tbody),
			this.empty,
		);
	}

	/** Renders the sampler's latest queues; the app polls them before each call. */
	async refresh() {
		const rows = this.sampler.latest() || [];
		// Rows are rebuilt only when they changed, so a button under the pointer stays put.
		const text = JSON.stringify(rows);
		if (text !== this.shownRows) {
			this.shownRows = text;
			this.tbody.replaceChildren(...rows.map((row) => this.row(row)));
			this.empty.hidden = rows.length > 0;
		}
		this.depthChart.draw(this.sampler.depthSeries());
		this.rateChart.draw(this.sampler.rateSeries());
	}

	row(q) {
		const jobsOf = (status) => `#/jobs?model=${encodeURIComponent(q.model)}${status ? `&status=${status}` : ''}`;
		return el('tr', { dataset: { model: q.model } },
			el('td', {}, el('a', { href: jobsOf(''), class: 'mono' }, q.model)),
			COUNTS.map((c) => el('td', { class: 'num', dataset: { field: c } },
				c === 'waiting_workers' ? String(q[c] ?? 0) : el('a', { href: jobsOf(c) }, String(q[c] ?? 0)))),
			el('td', {}, timeCell(q.oldest_pending_at)),
			el('td', {}, el('button', {
				class: 'danger small',
				disabled: !(q.pending > 0),
				title: 'Cancel every pending job of this model',
				on: { click: () => this.clearQueue(q.model, q.pending) },
			}, 'Clear')));
	}

	async clearQueue(model, pending) {
		const ok = await askConfirm(
			`Cancel all ${pending} pending jobs of ${model}? Running jobs keep running.`,
			'Clear queue',
		);
		if (!ok) return;
		try {
			const body = await api.clear(model);
			showBanner(`Cleared ${model}: ${body?.canceled_count ?? 0} pending jobs canceled.`, 'info');
		} catch (err) {
			this.ctx.reportError(err, `Clearing ${model} failed`);
			return;
		}
		await this.ctx.refreshNow();
	}
}
