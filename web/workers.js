// The Workers view: every worker name the server has seen, with its version, when it was
// first and last seen, the jobs it has claimed now and how many it finished.
//
// SPDX-License-Identifier: MIT

import { api } from './api.js';
import { el, formatTime, jobLink, timeAgo } from './dom.js';

export class WorkersView {
	constructor(container, ctx) {
		this.ctx = ctx;
		this.tbody = el('tbody');
		this.empty = el('p', { class: 'muted', hidden: true },
			'No workers yet. A worker appears here once it claims a job under a name ("worker" in the claim).');
		container.replaceChildren(
			el('h1', {}, 'Workers'),
			el('table', { class: 'grid', 'data-testid': 'workers-table' },
				el('thead', {}, el('tr', {},
					['Name', 'Version', 'First seen', 'Last seen', 'Current jobs', 'Done', 'Failed', 'Expired']
						.map((h) => el('th', {}, h)))),
				this.tbody),
			this.empty,
		);
	}

	async refresh() {
		const body = await api.workers();
		const workers = Array.isArray(body?.data) ? body.data : [];
		this.tbody.replaceChildren(...workers.map((w) => el('tr', { dataset: { worker: w.name } },
			el('td', { class: 'mono' }, w.name),
			el('td', {}, w.version || '–'),
			el('td', {}, el('time', { datetime: w.first_seen }, formatTime(w.first_seen))),
			el('td', {}, el('time', { datetime: w.last_seen, title: formatTime(w.last_seen) }, timeAgo(w.last_seen))),
			el('td', { dataset: { field: 'current_jobs' } }, currentJobs(w.current_jobs)),
			el('td', { class: 'num', dataset: { field: 'jobs_done' } }, String(w.jobs_done ?? 0)),
			el('td', { class: 'num', dataset: { field: 'jobs_failed' } }, String(w.jobs_failed ?? 0)),
			el('td', { class: 'num', dataset: { field: 'jobs_expired' } }, String(w.jobs_expired ?? 0)))));
		this.empty.hidden = workers.length > 0;
	}
}

function currentJobs(jobs) {
	if (!Array.isArray(jobs) || jobs.length === 0) return el('span', { class: 'muted' }, 'idle');
	return el('ul', { class: 'plain' }, jobs.map((j) => el('li', {}, jobLink(j.request_id), ' ', el('span', { class: 'muted' }, j.model))));
}
