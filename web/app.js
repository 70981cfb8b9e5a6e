// The inferq dashboard: asks for an admin key, routes by the URL hash (#/queues, #/jobs,
// #/jobs/ID, #/workers) and refreshes the shown view every 2 s.
//
// One refresh loop runs at a time. Each route change or refreshNow() starts a new generation
// and a loop that finds its generation outdated stops, so a slow answer for an old view never
// draws over a new one. Each pass also samples GET /v1/admin/queues for the charts, so their
// history keeps growing while another view is shown.
//
// SPDX-License-Identifier: MIT

import { forgetKey, loadKey, saveKey } from './api.js';
import { el, hideBanner, showBanner } from './dom.js';
import { JobView, JobsView } from './jobs.js';
import { QueueSampler, QueuesView } from './queues.js';
import { WorkersView } from './workers.js';

const REFRESH_MS = 2000;

const sampler = new QueueSampler();
const ctx = { sampler, refreshNow, reportError };
let current = null; // { route, view }
let generation = 0;
let timer = null;

function parseRoute() {
	const hash = location.hash.replace(/^#/, '') || '/queues';
	const [path, search = ''] = hash.split('?');
	const parts = path.split('/').filter(Boolean);
	if (parts[0] === 'jobs' && parts[1]) return { name: 'job', id: decodeURIComponent(parts[1]) };
	if (parts[0] === 'jobs') return { name: 'jobs', params: new URLSearchParams(search) };
	if (parts[0] === 'workers') return { name: 'workers' };
	return { name: 'queues' };
}

function createView(route, container) {
	switch (route.name) {
	case 'jobs': return new JobsView(container, ctx, route.params);
	case 'job': return new JobView(container, ctx, route.id);
	case 'workers': return new WorkersView(container, ctx);
	default: return new QueuesView(container, ctx);
	}
}

function mount() {
	const route = parseRoute();
	const navName = route.name === 'job' ? 'jobs' : route.name;
	for (const link of document.querySelectorAll('nav a')) {
		link.classList.toggle('active', link.dataset.view === navName);
	}
	hideBanner();
	current = { route, view: createView(route, document.getElementById('view')) };
	refreshNow();
}

function stopRefresh() {
	generation++;
	clearTimeout(timer);
	timer = null;
}

/** Refreshes the current view at once and restarts the 2 s cycle from there. */
async function refreshNow() {
	stopRefresh();
	await tick(generation);
}

async function tick(gen) {
	const { route, view } = current;
	try {
		let sampleError = null;
		try {
			await sampler.poll();
		} catch (err) {
			sampleError = err;
		}
		if (sampleError && (sampleError.isAuth || route.name === 'queues')) throw sampleError;
		await view.refresh();
		if (gen !== generation) return;
		const banner = document.getElementById('banner');
		if (!banner.hidden && banner.dataset.source === 'refresh') hideBanner();
		document.getElementById('refresh-state').textContent = `updated ${new Date().toLocaleTimeString()}`;
	} catch (err) {
		if (gen !== generation) return;
		if (!reportError(err)) return;
	}
	if (gen === generation) timer = setTimeout(() => tick(gen), REFRESH_MS);
}

/**
 * Shows err to the operator. A rejected key asks for a new one and a route this server lacks
 * replaces the view with a "not available" notice: both stop the refresh and return false.
 * Other errors show in the banner (prefixed with what failed) and return true.
 */
function reportError(err, what = 'Refreshing failed') {
	if (err?.isAuth) {
		const why = err.status === 401
			? `The key was rejected (401 ${err.body?.message || 'unauthorized'}).`
			: `This key may not use the dashboard (403 ${err.body?.message || 'forbidden'}).`;
		askForKey(`${why} Enter an admin key.`);
		return false;
	}
	if (err?.isMissingRoute) {
		stopRefresh();
		document.getElementById('refresh-state').textContent = '';
		document.getElementById('view').replaceChildren(el('div', { class: 'notice', 'data-testid': 'not-available' },
			el('h1', {}, 'Not available'),
			el('p', {}, `This server has no ${err.route.split('?')[0]} route: it answered 404 (${err.body.message}).`),
			el('p', {}, 'The Queues, Jobs and Workers views need an inferq server with the admin API ' +
				'(GET /v1/admin/queues, /v1/admin/jobs and /v1/admin/workers). Upgrade the server, then reload this page.')));
		return false;
	}
	if (err?.name !== 'ApiError') console.error(err);
	showBanner(`${what}: ${err?.message || err}`, 'error', what === 'Refreshing failed' ? 'refresh' : 'action');
	document.getElementById('refresh-state').textContent = 'refresh failed; retrying';
	return true;
}

function askForKey(message) {
	stopRefresh();
	forgetKey();
	document.getElementById('forget-key').hidden = true;
	const text = document.getElementById('key-message');
	text.textContent = message || '';
	text.hidden = !message;
	const input = document.getElementById('key-input');
	input.value = '';
	const dialog = document.getElementById('key-dialog');
	if (!dialog.open) dialog.showModal();
	input.focus();
}

function useKey(event) {
	const input = document.getElementById('key-input');
	const key = input.value.trim();
	if (!key) {
		event.preventDefault();
		return;
	}
	saveKey(key);
	input.value = '';
	document.getElementById('forget-key').hidden = false;
	mount();
}

function start() {
	const dialog = document.getElementById('key-dialog');
	// Without a key the dashboard can show nothing, so Escape does not close the dialog.
	dialog.addEventListener('cancel', (event) => event.preventDefault());
	document.getElementById('key-form').addEventListener('submit', useKey);
	document.getElementById('forget-key').addEventListener('click', (event) => {
		event.preventDefault();
		askForKey('The key was removed from this tab.');
	});
	window.addEventListener('hashchange', () => {
		if (loadKey()) mount();
	});

	if (loadKey()) {
		document.getElementById('forget-key').hidden = false;
		mount();
	} else {
		askForKey('');
	}
}

start();
