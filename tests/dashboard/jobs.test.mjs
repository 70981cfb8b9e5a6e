// Drives the dashboard's Jobs views in headless Chromium against a real inferq server: a job
// moving from pending to done while its page is open, a failed job, cancel, an unknown job,
// and the list with its filters and "Load more".
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
	claim,
	complete,
	confirmDialog,
	fail,
	jobStatus,
	signIn,
	submit,
	uniqueModel,
	useDashboard,
	waitForView,
} from './support/dashboard.mjs';

const env = useDashboard();
const open = (viewport) => env.open(viewport);

it('job moves from pending to done', async () => {
	const model = uniqueModel('lifecycle');
	const id = await submit(env.server, model, { prompt: 'a red bicycle' }, { priority: 7, info: { stage: 'queued' } });
	const { page, problems } = await open();
	await signIn(page, env.server, `#/jobs/${id}`);
	await waitForView(page, '[data-testid=job-facts]');

	const status = page.locator('[data-testid=job-facts] [data-field=status] .badge');
	await status.filter({ hasText: 'pending' }).waitFor();
	assert.deepEqual(JSON.parse(await page.locator('[data-testid=job-inputs]').textContent()), { prompt: 'a red bicycle' });
	assert.equal(await page.locator('[data-testid=job-facts] [data-field=priority]').textContent(), '7');
	assert.equal(await page.locator('[data-testid=cancel-job]').isVisible(), true);

	const claimed = await claim(env.server, model, 'dash-lifecycle-worker');
	assert.equal(claimed.request_id, id);
	await status.filter({ hasText: 'running' }).waitFor();
	assert.equal(await page.locator('[data-testid=cancel-job]').count(), 0);

	await complete(env.server, claimed, { url: 'file:///tmp/bicycle.png' });
	await status.filter({ hasText: 'done' }).waitFor();
	assert.deepEqual(JSON.parse(await page.locator('[data-testid=job-outputs]').textContent()), { url: 'file:///tmp/bicycle.png' });
	assert.match(await page.locator('[data-testid=job-facts] [data-field=finished]').textContent(), /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/);
	const events = await page.locator('[data-testid=job-history] li').evaluateAll((items) => items.map((li) => li.dataset.event));
	assert.deepEqual(events, ['submitted', 'claimed', 'completed']);
	assert.match(await page.locator('[data-testid=job-history] li[data-event=claimed]').textContent(), /dash-lifecycle-worker/);
	assertNoProblems(problems);
});

it('failed job shows its error', async () => {
	const model = uniqueModel('failed');
	const id = await submit(env.server, model, { n: 1 });
	await fail(env.server, await claim(env.server, model, 'dash-fail-worker'), 'CUDA out of memory <script>');
	const { page, problems } = await open();
	await signIn(page, env.server, `#/jobs/${id}`);
	await waitForView(page, '[data-testid=job-facts]');
	const error = page.locator('[data-testid=job-error]');
	await error.waitFor();
	assert.equal(await error.textContent(), 'CUDA out of memory <script>');
	assert.equal(await page.locator('[data-testid=job-error] script').count(), 0);
	assertNoProblems(problems);
});

it('cancel from the job page', async () => {
	const model = uniqueModel('cancel');
	const id = await submit(env.server, model, { n: 1 });
	const { page, problems } = await open();
	await signIn(page, env.server, `#/jobs/${id}`);
	await waitForView(page, '[data-testid=job-facts]');
	await page.locator('[data-testid=cancel-job]').click();
	await confirmDialog(page);

	await page.locator('[data-testid=job-facts] .badge', { hasText: 'canceled' }).waitFor();
	await page.locator('#banner', { hasText: `Job ${id} canceled.` }).waitFor();
	assert.equal(await page.locator('[data-testid=cancel-job]').count(), 0);
	assert.equal((await jobStatus(env.server, model, id)).status, 'canceled');
	assertNoProblems(problems);
});

it('cancel of a job claimed meanwhile reports its status', async () => {
	const model = uniqueModel('cancel-late');
	const id = await submit(env.server, model, { n: 1 });
	const { page, problems, expectStatus } = await open();
	expectStatus(409);
	await signIn(page, env.server, `#/jobs/${id}`);
	await waitForView(page, '[data-testid=job-facts]');
	await page.locator('[data-testid=cancel-job]').waitFor();
	await claim(env.server, model, 'dash-late-worker');
	// The page may already show "running"; the button then is gone and there is nothing to test.
	await page.locator('[data-testid=cancel-job]').click({ timeout: 1500 }).catch(() => {});
	if (await page.locator('#confirm-dialog[open]').count()) {
		await page.click('#confirm-yes');
		await page.locator('#banner', { hasText: 'was not canceled: it is running' }).waitFor();
	}
	await page.locator('[data-testid=job-facts] .badge', { hasText: 'running' }).waitFor();
	assert.equal((await jobStatus(env.server, model, id)).status, 'running');
	assertNoProblems(problems);
});

it('unknown job shows not found', async () => {
	const { page, problems, expectStatus } = await open();
	expectStatus(404);
	const unknown = '00000000-0001-7000-8000-000000000001';
	await signIn(page, env.server, `#/jobs/${unknown}`);
	await waitForView(page, '[data-testid=job-missing]');
	const missing = page.locator('[data-testid=job-missing]');
	assert.match(await missing.textContent(), new RegExp(`Job ${unknown} not found`));
	assertNoProblems(problems);
});

it('list filters by model and status, loads more', async () => {
	const model = uniqueModel('list');
	const ids = [];
	for (let i = 0; i < 60; i++) ids.push(await submit(env.server, model, { i }));
	const first = await claim(env.server, model, 'dash-list-worker');
	await complete(env.server, first, { ok: 1 });
	await submit(env.server, uniqueModel('list-other'), { other: true });

	const { page, problems } = await open();
	await signIn(page, env.server, `#/jobs?model=${encodeURIComponent(model)}`);
	const rows = page.locator('[data-testid=jobs-table] tbody tr');
	await waitForView(page, '[data-testid=jobs-table] tbody tr');
	assert.equal(await rows.count(), 50);
	// Newest first: the last submitted job heads the list.
	assert.equal(await rows.first().getAttribute('data-request-id'), ids[59]);
	const models = await rows.evaluateAll((trs) => trs.map((tr) => tr.children[1].textContent));
	assert.deepEqual([...new Set(models)], [model]);

	await page.click('[data-testid=load-more]');
	await page.waitForFunction(() => document.querySelectorAll('[data-testid=jobs-table] tbody tr').length === 60);
	assert.equal(await rows.last().getAttribute('data-request-id'), ids[0]);
	assert.equal(await page.locator('[data-testid=load-more]').isHidden(), true);

	await page.selectOption('#filter-status', 'done');
	await page.click('.filters button[type=submit]');
	await page.waitForFunction(() => location.hash.includes('status=done'));
	await page.waitForFunction(() => document.querySelectorAll('[data-testid=jobs-table] tbody tr').length === 1);
	assert.equal(await rows.first().getAttribute('data-request-id'), ids[0]);
	assert.equal(await rows.first().getAttribute('data-status'), 'done');

	// A job row links to its page.
	await rows.first().locator('a').click();
	await page.locator('[data-testid=job-facts] .badge', { hasText: 'done' }).waitFor();
	assert.equal(await page.evaluate(() => location.hash), `#/jobs/${ids[0]}`);
	assertNoProblems(problems);
});
