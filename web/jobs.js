// The Jobs views: a list filtered by model and status, newest first, with "Load more" pages
// by cursor; and the page of one job with its inputs, info, outputs, error, times and history,
// where a pending job can be canceled.
//
// SPDX-License-Identifier: MIT

import { api } from './api.js';
import { askConfirm, el, jobLink, jsonBlock, showBanner, statusBadge, timeCell } from './dom.js';

const PAGE_SIZE = 50;
const STATUSES = ['pending', 'running', 'done', 'failed', 'canceled'];
const TERMINAL = new Set(['done', 'failed', 'canceled']);

export class JobsView {
	constructor(container, ctx, params) {
		this.ctx = ctx;
		this.filters = { model: params.get('model') || '', status: params.get('status') || '' };
		this.firstPage = [];
		this.more = [];
		this.nextCursor = null;
		this.loadedMore = false;

		this.modelInput = el('input', { id: 'filter-model', name: 'model', list: 'model-names', value: this.filters.model, placeholder: 'all models', spellcheck: 'false' });
		this.statusSelect = el('select', { id: 'filter-status', name: 'status' },
			el('option', { value: '' }, 'any status'),
			STATUSES.map((s) => el('option', { value: s, selected: s === this.filters.status }, s)));
		this.modelList = el('datalist', { id: 'model-names' });
		this.tbody = el('tbody');
		this.empty = el('p', { class: 'muted', hidden: true }, 'No jobs match these filters.');
		this.moreButton = el('button', { hidden: true, 'data-testid': 'load-more', on: { click: () => this.loadMore() } }, 'Load more');

		const form = el('form', { class: 'filters', on: { submit: (e) => this.apply(e) } },
			el('label', { for: 'filter-model' }, 'Model'), this.modelInput, this.modelList,
			el('label', { for: 'filter-status' }, 'Status'), this.statusSelect,
			el('button', { type: 'submit' }, 'Apply'));
		container.replaceChildren(
			el('h1', {}, 'Jobs'),
			form,
			el('table', { class: 'grid', 'data-testid': 'jobs-table' },
				el('thead', {}, el('tr', {},
					['Request id', 'Model', 'Status', 'Priority', 'Retries', 'Created', 'Claimed', 'Finished']
						.map((h) => el('th', {}, h)))),
				this.tbody),
			this.empty,
			el('div', { class: 'actions' }, this.moreButton),
		);
	}

	apply(event) {
		event.preventDefault();
		const params = new URLSearchParams();
		if (this.modelInput.value.trim()) params.set('model', this.modelInput.value.trim());
		if (this.statusSelect.value) params.set('status', this.statusSelect.value);
		const text = params.toString();
		location.hash = `#/jobs${text ? `?${text}` : ''}`;
	}

	/** Reloads the first page; rows from "Load more" pages stay below it. */
	async refresh() {
		const body = await api.jobs({ ...this.filters, limit: PAGE_SIZE });
		this.firstPage = Array.isArray(body?.data) ? body.data : [];
		if (!this.loadedMore) this.nextCursor = body?.next_cursor || null;
		this.render();
	}

	async loadMore() {
		if (!this.nextCursor) return;
		this.moreButton.disabled = true;
		try {
			const body = await api.jobs({ ...this.filters, limit: PAGE_SIZE, cursor: this.nextCursor });
			this.more.push(...(Array.isArray(body?.data) ? body.data : []));
			this.nextCursor = body?.next_cursor || null;
			this.loadedMore = true;
			this.render();
		} catch (err) {
			this.ctx.reportError(err, 'Loading more jobs failed');
		} finally {
			this.moreButton.disabled = false;
		}
	}

	render() {
		const seen = new Set(this.firstPage.map((j) => j.request_id));
		const rows = [...this.firstPage, ...this.more.filter((j) => !seen.has(j.request_id))];
		this.tbody.replaceChildren(...rows.map((job) => el('tr', { dataset: { requestId: job.request_id, status: job.status } },
			el('td', {}, jobLink(job.request_id)),
			el('td', { class: 'mono' }, job.model),
			el('td', {}, statusBadge(job.status)),
			el('td', { class: 'num' }, String(job.priority ?? 0)),
			el('td', { class: 'num' }, String(job.retries ?? 0)),
			el('td', {}, timeCell(job.created_at)),
			el('td', {}, timeCell(job.claimed_at)),
			el('td', {}, timeCell(job.done_at)))));
		this.empty.hidden = rows.length > 0;
		this.moreButton.hidden = !this.nextCursor;

		const models = (this.ctx.sampler.latest() || []).map((q) => q.model);
		this.modelList.replaceChildren(...models.map((m) => el('option', { value: m })));
	}
}

export class JobView {
	constructor(container, ctx, requestId) {
		this.ctx = ctx;
		this.requestId = requestId;
		this.job = null;
		this.content = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
		container.replaceChildren(
			el('p', {}, el('a', { href: '#/jobs' }, '← Jobs')),
			el('h1', {}, 'Job ', el('span', { class: 'mono' }, requestId)),
			this.content,
		);
	}

	/** Reloads the job until it is finished: a finished job does not change any more. */
	async refresh() {
		if (this.job && TERMINAL.has(this.job.status)) return;
		try {
			const job = await api.job(this.requestId);
			// Unchanged jobs are not redrawn, so the cancel button under the pointer stays put.
			if (this.job && JSON.stringify(job) === JSON.stringify(this.job)) return;
			this.job = job;
		} catch (err) {
			if (err.status === 404 && !err.isMissingRoute) {
				this.content.replaceChildren(el('p', { class: 'notice', 'data-testid': 'job-missing' },
					`Job ${this.requestId} not found. Finished jobs are deleted after the retention period (--retention).`));
				return;
			}
			throw err;
		}
		this.render(this.job);
	}

	render(job) {
		const facts = [
			['Status', statusBadge(job.status)],
			['Model', el('span', { class: 'mono' }, job.model)],
			['Priority', String(job.priority ?? 0)],
			['Retries', String(job.retries ?? 0)],
			['Created', timeCell(job.created_at)],
			['Claimed', timeCell(job.claimed_at)],
			['Finished', timeCell(job.done_at)],
		];
		const cancel = job.status === 'pending'
			? el('button', { class: 'danger', 'data-testid': 'cancel-job', on: { click: () => this.cancel() } }, 'Cancel job')
			: null;
		this.content.replaceChildren(
			el('dl', { class: 'facts', 'data-testid': 'job-facts' }, facts.map(([name, value]) => [el('dt', {}, name), el('dd', { dataset: { field: name.toLowerCase() } }, value)])),
			cancel && el('div', { class: 'actions' }, cancel),
			job.error ? el('section', {}, el('h2', {}, 'Error'), el('pre', { class: 'error-text', 'data-testid': 'job-error' }, job.error)) : null,
			el('section', {}, el('h2', {}, 'Inputs'), jsonBlock(job.inputs, 'job-inputs')),
			el('section', {}, el('h2', {}, 'Info'), jsonBlock(job.info, 'job-info')),
			el('section', {}, el('h2', {}, 'Outputs'), jsonBlock(job.outputs, 'job-outputs')),
			el('section', {}, el('h2', {}, 'History'), historyList(job.history)),
		);
	}

	async cancel() {
		const job = this.job;
		if (!(await askConfirm(`Cancel job ${job.request_id} of ${job.model}?`, 'Cancel job'))) return;
		try {
			await api.cancel(job.model, job.request_id);
			showBanner(`Job ${job.request_id} canceled.`, 'info');
		} catch (err) {
			if (err.status === 409) {
				showBanner(`Job ${job.request_id} was not canceled: it is ${err.body?.status ?? 'no longer pending'}, and only a pending job can be canceled.`);
			} else {
				this.ctx.reportError(err, 'Canceling the job failed');
				return;
			}
		}
		this.job = null;
		await this.ctx.refreshNow();
	}
}

function historyList(history) {
	if (!Array.isArray(history) || history.length === 0) {
		return el('p', { class: 'muted' }, 'No history recorded.');
	}
	return el('ol', { class: 'timeline', 'data-testid': 'job-history' }, history.map((h) => el('li', { dataset: { event: h.event } },
		timeCell(h.at),
		' ',
		el('strong', {}, h.event),
		h.worker ? [' by ', el('span', { class: 'mono' }, h.worker)] : null,
		h.detail ? el('div', { class: 'muted' }, typeof h.detail === 'string' ? h.detail : JSON.stringify(h.detail)) : null)));
}
