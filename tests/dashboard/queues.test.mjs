// Drives the dashboard's Queues view in headless Chromium against a real inferq server:
// counts per model, the charts, clearing a queue, and the notice of a server without the
// admin API. Jobs move through the real API while the page is open.
//
// These tests need the admin API (GET /v1/admin/queues, /v1/admin/jobs, /v1/admin/jobs/ID and
// /v1/admin/workers). Against a server without it they fail with the page's "not available"
// notice in their message.
//
// SPDX-License-Identifier: MIT

import assert from 'node:assert/strict';
import { it } from 'node:test';

import {
	assertNoProblems,
	call,
	claim,
	complete,
	confirmDialog,
	jobStatus,
	signIn,
	submit,
	uniqueModel,
	useDashboard,
	waitForView,
} from './support/dashboard.mjs';

const env = useDashboard();
const open = (viewport) => env.open(viewport);

function queueRow(page, model) {
	return page.locator(`[data-testid=queues-table] tr[data-model="${model}"]`);
}

it('shows a queue after a submit', async () => {
	const model = uniqueModel('queue');
	const { page, problems } = await open();
	await signIn(page, env.server);
	await waitForView(page, '[data-testid=queues-table]');

	await submit(env.server, model, { n: 1 });
	await submit(env.server, model, { n: 2 });
	const running = await claim(env.server, model, 'dash-queue-worker');
	await submit(env.server, model, { n: 3 });

	await waitForView(page, `[data-testid=queues-table] tr[data-model="${model}"]`);
	const row = queueRow(page, model);
	await row.locator('[data-field=pending]', { hasText: /^2$/ }).waitFor();
	assert.equal(await row.locator('[data-field=running]').textContent(), '1');
	assert.equal(await row.locator('[data-field=done]').textContent(), '0');

	await complete(env.server, running, { ok: true });
	await row.locator('[data-field=done]', { hasText: /^1$/ }).waitFor();
	assert.equal(await row.locator('[data-field=running]').textContent(), '0');
	assertNoProblems(problems);
});

it('charts draw depth and throughput', async () => {
	const model = uniqueModel('chart');
	const { page, problems } = await open();
	await signIn(page, env.server);
	await waitForView(page, '[data-testid=queues-table]');
	for (let i = 0; i < 5; i++) await submit(env.server, model, { i });
	await queueRow(page, model).waitFor();

	// Two samples at least, so the rate chart has a point: wait for the next refresh.
	const before = await page.locator('#refresh-state').textContent();
	await page.waitForFunction((text) => document.getElementById('refresh-state').textContent !== text, before);
	const painted = await page.evaluate(() => [...document.querySelectorAll('canvas.chart')].map((canvas) => {
		const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
		let colored = 0;
		for (let i = 0; i < data.length; i += 4) {
			// Pending (amber) and submitted (violet) lines: red channel high, not grey.
			if (data[i + 3] > 200 && Math.abs(data[i] - data[i + 2]) > 60) colored++;
		}
		return colored;
	}));
	assert.equal(painted.length, 2);
	assert.ok(painted[0] > 50, `depth chart has ${painted[0]} coloured pixels`);
	assert.ok(painted[1] > 50, `rate chart has ${painted[1]} coloured pixels`);
	assert.match(await page.locator('[data-testid=depth-chart]').getAttribute('aria-label'), /Queue depth/);
	assertNoProblems(problems);
});

it('clear cancels pending jobs after confirmation', async () => {
	const model = uniqueModel('clear');
	const ids = [];
	for (let i = 0; i < 3; i++) ids.push(await submit(env.server, model, { i }));
	const running = await claim(env.server, model, 'dash-clear-worker');
	const { page, problems } = await open();
	await signIn(page, env.server);
	await waitForView(page, `[data-testid=queues-table] tr[data-model="${model}"]`);
	const row = queueRow(page, model);
	await row.locator('[data-field=pending]', { hasText: /^2$/ }).waitFor();

	// "Keep" leaves the queue alone.
	await row.locator('button', { hasText: 'Clear' }).click();
	await page.locator('#confirm-dialog[open]').waitFor();
	assert.match(await page.locator('#confirm-text').textContent(), new RegExp(`2 pending jobs of ${model}`));
	await page.click('#confirm-no');
	assert.equal((await call(env.server, 'GET', `/v1/queue/metrics?model=${model}`)).body.messages_waiting, 2);

	await row.locator('button', { hasText: 'Clear' }).click();
	await confirmDialog(page);
	await page.locator('#banner', { hasText: `Cleared ${model}: 2 pending jobs canceled.` }).waitFor();
	await row.locator('[data-field=canceled]', { hasText: /^2$/ }).waitFor();
	assert.equal(await row.locator('[data-field=pending]').textContent(), '0');
	assert.equal(await row.locator('button', { hasText: 'Clear' }).isDisabled(), true);

	const metrics = (await call(env.server, 'GET', `/v1/queue/metrics?model=${model}`)).body;
	assert.equal(metrics.messages_waiting, 0);
	assert.equal(metrics.messages_running, 1);
	assert.equal((await jobStatus(env.server, model, ids[1])).status, 'canceled');
	assert.equal((await jobStatus(env.server, model, running.request_id)).status, 'running');
	assertNoProblems(problems);
});

it('missing admin API shows not available', async () => {
	const { page, problems, expectStatus } = await open();
	expectStatus(404);
	// Stands in for a server without the admin API, whose router returns 404 "no route".
	await page.route('**/v1/admin/**', (route) => route.fulfill({
		status: 404,
		contentType: 'application/json',
		body: JSON.stringify({ code: 'not_found', message: 'no route GET /v1/admin/queues; see docs/api.md for the routes', type: 'not_found_error' }),
	}));
	await signIn(page, env.server);
	const notice = page.locator('[data-testid=not-available]');
	await notice.waitFor();
	assert.match(await notice.textContent(), /Not available.*no \/v1\/admin\/queues route/s);
	assert.equal(await page.locator('#key-dialog').isHidden(), true);
	assertNoProblems(problems);
});
