// Drives a real inferq server through every queue method of the official Together
// TypeScript SDK (client.beta.jig.queue: submit, retrieve, cancel, clear, metrics) and checks
// the fields the SDK's types promise and the typed errors it raises.
//
// The SDK has no worker methods, so jobs are moved to running, done and failed with raw
// calls to inferq's worker routes.
//
// SPDX-License-Identifier: MIT

import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';

import {
	APIError,
	BadRequestError,
	ConflictError,
	NotFoundError,
} from 'together-ai';

import {
	TIME_RE,
	UNKNOWN_ID,
	UUID7_RE,
	claimJob,
	completeJob,
	failJob,
	rawRequest,
	rejection,
	sdkClient,
	startServer,
	stopCleanly,
} from './support/inferq.mjs';

let server;
let queue;

before(async () => {
	server = await startServer();
	queue = sdkClient(server.baseURL, server.adminKey).beta.jig.queue;
});

after(async () => {
	if (server) await stopCleanly(server);
});

// Checks that err is the SDK's typed error for status and carries inferq's QueueError body.
function assertQueueError(err, ErrorClass, status, type, code) {
	assert.ok(err instanceof ErrorClass, `expected ${ErrorClass.name}, got ${err.constructor.name}: ${err}`);
	assert.ok(err instanceof APIError);
	assert.equal(err.status, status);
	assert.equal(err.error.type, type);
	assert.equal(err.error.code, code);
	assert.equal(typeof err.error.message, 'string');
	assert.equal(err.message, `${status} ${err.error.message}`);
	assert.equal(err.headers.get('content-type'), 'application/json');
	assert.equal(err.headers.get('x-should-retry'), 'false');
}

// Returns a model name no earlier test used, so each test reads only its own jobs.
let modelCount = 0;
function freshModel(prefix) {
	modelCount += 1;
	return `${prefix}-${modelCount}`;
}

async function submitOne(model, extra = {}) {
	const response = await queue.submit({ model, payload: { prompt: 'hello' }, ...extra });
	return response.requestId;
}

describe('submit', () => {
	it('returns requestId and request_id', async () => {
		const { data, response } = await queue
			.submit({ model: 'compat/submit', payload: { prompt: 'a cat' } })
			.withResponse();

		assert.equal(response.status, 200);
		assert.equal(response.headers.get('content-type'), 'application/json');
		assert.match(data.requestId, UUID7_RE);
		assert.equal(data.request_id, data.requestId);
		assert.equal(data.warnings, undefined);
	});

	it('stores payload, info and priority', async () => {
		const payload = { prompt: 'a cat', steps: 30, nested: { list: [1, 'two', null, true] } };
		const info = { user: 'u-1', tags: ['a'] };
		const { requestId } = await queue.submit({ model: 'compat/submit', payload, info, priority: 7 });

		const job = await queue.retrieve({ model: 'compat/submit', request_id: requestId });
		assert.equal(job.request_id, requestId);
		assert.equal(job.model, 'compat/submit');
		assert.equal(job.status, 'pending');
		assert.deepEqual(job.inputs, payload);
		assert.deepEqual(job.info, info);
		assert.equal(job.priority, 7);
		assert.equal(job.retries, 0);
		assert.match(job.created_at, TIME_RE);
	});

	it('defaults priority to 0', async () => {
		const requestId = await submitOne('compat/submit');
		const job = await queue.retrieve({ model: 'compat/submit', request_id: requestId });
		assert.equal(job.priority, 0);
		assert.equal(job.info, undefined);
	});

	it('serves higher priority first', async () => {
		const low = await submitOne('compat/priority', { priority: -5 });
		const high = await submitOne('compat/priority', { priority: 5 });
		const first = await claimJob(server.origin, server.adminKey, 'compat/priority');
		const second = await claimJob(server.origin, server.adminKey, 'compat/priority');
		assert.equal(first.request_id, high);
		assert.equal(second.request_id, low);
	});

	it('reports unknown fields as warnings', async () => {
		const response = await queue.submit({ model: 'compat/submit', payload: {}, colour: 'red' });
		assert.ok(Array.isArray(response.warnings), `no warnings in ${JSON.stringify(response)}`);
		assert.equal(response.warnings.length, 1);
		assert.match(response.warnings[0], /colour/);

		const job = await queue.retrieve({ model: 'compat/submit', request_id: response.requestId });
		assert.deepEqual(job.warnings, response.warnings);
	});

	it('missing payload is BadRequestError', async () => {
		const err = await rejection(queue.submit({ model: 'compat/submit' }));
		assertQueueError(err, BadRequestError, 400, 'invalid_request_error', 'missing_field');
		assert.equal(err.error.param, 'payload');
		assert.match(err.error.message, /payload/);
	});

	it('fractional priority is BadRequestError', async () => {
		const err = await rejection(queue.submit({ model: 'compat/submit', payload: {}, priority: 1.5 }));
		assertQueueError(err, BadRequestError, 400, 'invalid_request_error', 'invalid_field');
		assert.equal(err.error.param, 'priority');
		assert.equal(
			err.error.message,
			'priority must be an integer from -2147483648 to 2147483647; got 1.5',
		);
	});

	it('invalid model name is BadRequestError', async () => {
		const err = await rejection(queue.submit({ model: 'has space', payload: {} }));
		assertQueueError(err, BadRequestError, 400, 'invalid_request_error', 'invalid_field');
		assert.equal(err.error.param, 'model');
		assert.match(err.error.message, /has space/);
	});

	it('SDK error body equals the raw response', async () => {
		const body = { model: 'compat/submit', payload: 'not an object' };
		const err = await rejection(queue.submit(body));
		const raw = await rawRequest(server.origin, server.adminKey, 'POST', '/v1/queue/submit', body);
		assert.equal(raw.status, 400);
		assertQueueError(err, BadRequestError, 400, 'invalid_request_error', raw.body.code);
		assert.deepEqual(err.error, raw.body);
	});

	it('repeated Idempotency-Key returns the first job', async () => {
		const body = { model: 'compat/idem', payload: { n: 1 } };
		const options = { headers: { 'Idempotency-Key': 'compat-idem-1' } };
		const first = await queue.submit(body, options);
		const second = await queue.submit(body, options);
		assert.equal(second.requestId, first.requestId);

		const metrics = await queue.metrics({ model: 'compat/idem' });
		assert.equal(metrics.messages_waiting, 1);
	});

	it('reused Idempotency-Key with another body is ConflictError', async () => {
		const options = { headers: { 'Idempotency-Key': 'compat-idem-2' } };
		await queue.submit({ model: 'compat/idem', payload: { n: 1 } }, options);
		const err = await rejection(queue.submit({ model: 'compat/idem', payload: { n: 2 } }, options));
		assertQueueError(err, ConflictError, 409, 'conflict_error', 'idempotency_conflict');
		assert.match(err.error.message, /Idempotency-Key/i);
	});
});

describe('retrieve', () => {
	let model;
	beforeEach(() => {
		model = freshModel('compat/retrieve');
	});

	it('pending job has no claim or end fields', async () => {
		const requestId = await submitOne(model);
		const { data: job, response } = await queue.retrieve({ model, request_id: requestId }).withResponse();
		assert.equal(response.headers.get('content-type'), 'application/json');
		assert.equal(job.status, 'pending');
		assert.deepEqual(job.inputs, { prompt: 'hello' });
		for (const field of ['claimed_at', 'lease_expires_at', 'done_at', 'outputs', 'error']) {
			assert.equal(job[field], undefined, `pending job has ${field}`);
		}
	});

	it('running job has claimed_at and lease_expires_at', async () => {
		const requestId = await submitOne(model);
		const claim = await claimJob(server.origin, server.adminKey, model);
		assert.equal(claim.request_id, requestId);

		const job = await queue.retrieve({ model, request_id: requestId });
		assert.equal(job.status, 'running');
		assert.match(job.claimed_at, TIME_RE);
		assert.match(job.lease_expires_at, TIME_RE);
		assert.ok(Date.parse(job.lease_expires_at) > Date.parse(job.claimed_at));
		assert.equal(job.done_at, undefined);
		assert.equal(job.outputs, undefined);
	});

	it('done job has outputs and done_at', async () => {
		const requestId = await submitOne(model);
		const claim = await claimJob(server.origin, server.adminKey, model);
		assert.equal(claim.request_id, requestId);
		const outputs = { url: 'https://example.invalid/out.mp4', seconds: 4.5 };
		await completeJob(server.origin, server.adminKey, claim, outputs);

		const job = await queue.retrieve({ model, request_id: requestId });
		assert.equal(job.status, 'done');
		assert.deepEqual(job.outputs, outputs);
		assert.match(job.done_at, TIME_RE);
		assert.match(job.claimed_at, TIME_RE);
		assert.equal(job.lease_expires_at, undefined);
		assert.equal(job.error, undefined);
	});

	it('failed job has error and done_at', async () => {
		const requestId = await submitOne(model);
		const claim = await claimJob(server.origin, server.adminKey, model);
		assert.equal(claim.request_id, requestId);
		await failJob(server.origin, server.adminKey, claim, 'out of memory');

		const job = await queue.retrieve({ model, request_id: requestId });
		assert.equal(job.status, 'failed');
		assert.equal(job.error, 'out of memory');
		assert.match(job.done_at, TIME_RE);
		assert.equal(job.outputs, undefined);
	});

	it('model with every allowed character round-trips', async () => {
		// The SDK percent-encodes the query; inferq must decode / and : back.
		const name = 'Org.1/video_gen:v2-beta';
		const requestId = await submitOne(name);
		const job = await queue.retrieve({ model: name, request_id: requestId });
		assert.equal(job.model, name);
		const metrics = await queue.metrics({ model: name });
		assert.equal(metrics.messages_waiting, 1);
		assert.deepEqual(await queue.clear({ model: name }), { canceled_count: 1 });
	});

	it('baseURL with a trailing slash works', async () => {
		const slashed = sdkClient(`${server.baseURL}/`, server.adminKey).beta.jig.queue;
		const { requestId } = await slashed.submit({ model, payload: {} });
		const job = await slashed.retrieve({ model, request_id: requestId });
		assert.equal(job.status, 'pending');
	});

	it('malformed request_id is BadRequestError', async () => {
		const err = await rejection(queue.retrieve({ model, request_id: 'nope' }));
		assertQueueError(err, BadRequestError, 400, 'invalid_request_error', 'invalid_field');
		assert.equal(err.error.param, 'request_id');
		assert.match(err.error.message, /"nope"/);
	});

	it('unknown request_id is NotFoundError', async () => {
		const err = await rejection(queue.retrieve({ model, request_id: UNKNOWN_ID }));
		assertQueueError(err, NotFoundError, 404, 'not_found_error', 'not_found');
		assert.match(err.error.message, new RegExp(`no job ${UNKNOWN_ID} for model ${model}`));
	});

	it('job of another model is NotFoundError', async () => {
		const requestId = await submitOne(model);
		const err = await rejection(queue.retrieve({ model: 'compat/other', request_id: requestId }));
		assertQueueError(err, NotFoundError, 404, 'not_found_error', 'not_found');
		assert.match(err.error.message, /compat\/other/);
	});
});

describe('cancel', () => {
	let model;
	beforeEach(() => {
		model = freshModel('compat/cancel');
	});

	async function startedJob() {
		const requestId = await submitOne(model);
		const claim = await claimJob(server.origin, server.adminKey, model);
		assert.equal(claim.request_id, requestId);
		return claim;
	}

	async function assertCancelConflict(requestId, status) {
		const err = await rejection(queue.cancel({ model, request_id: requestId }));
		assertQueueError(err, ConflictError, 409, 'conflict_error', 'invalid_state');
		assert.equal(err.error.status, status);
		assert.match(err.error.message, new RegExp(status));
		const job = await queue.retrieve({ model, request_id: requestId });
		assert.equal(job.status, status);
	}

	it('pending job becomes canceled', async () => {
		const requestId = await submitOne(model);
		const response = await queue.cancel({ model, request_id: requestId });
		assert.deepEqual(response, { status: 'canceled', request_id: requestId, model });

		const job = await queue.retrieve({ model, request_id: requestId });
		assert.equal(job.status, 'canceled');
		assert.match(job.done_at, TIME_RE);
	});

	it('running job is ConflictError with status running', async () => {
		const claim = await startedJob();
		await assertCancelConflict(claim.request_id, 'running');
	});

	it('done job is ConflictError with status done', async () => {
		const claim = await startedJob();
		await completeJob(server.origin, server.adminKey, claim, { ok: true });
		await assertCancelConflict(claim.request_id, 'done');
	});

	it('failed job is ConflictError with status failed', async () => {
		const claim = await startedJob();
		await failJob(server.origin, server.adminKey, claim, 'bad input');
		await assertCancelConflict(claim.request_id, 'failed');
	});

	it('canceled job is ConflictError with status canceled', async () => {
		const requestId = await submitOne(model);
		await queue.cancel({ model, request_id: requestId });
		await assertCancelConflict(requestId, 'canceled');
	});

	it('unknown request_id is NotFoundError', async () => {
		const err = await rejection(queue.cancel({ model, request_id: UNKNOWN_ID }));
		assertQueueError(err, NotFoundError, 404, 'not_found_error', 'not_found');
		assert.match(err.error.message, new RegExp(UNKNOWN_ID));
	});

	it('missing request_id is BadRequestError', async () => {
		const err = await rejection(queue.cancel({ model }));
		assertQueueError(err, BadRequestError, 400, 'invalid_request_error', 'missing_field');
		assert.equal(err.error.param, 'request_id');
	});
});

describe('metrics', () => {
	it('model without jobs gives zeros', async () => {
		const { data, response } = await queue.metrics({ model: 'compat/empty' }).withResponse();
		assert.equal(response.headers.get('content-type'), 'application/json');
		assert.deepEqual(data, { messages_waiting: 0, messages_running: 0, total_jobs: 0 });
	});

	it('counts waiting and running jobs', async () => {
		const model = 'compat/metrics';
		await submitOne(model);
		await submitOne(model);
		await submitOne(model);
		const claim = await claimJob(server.origin, server.adminKey, model);
		assert.deepEqual(await queue.metrics({ model }), {
			messages_waiting: 2,
			messages_running: 1,
			total_jobs: 3,
		});

		await completeJob(server.origin, server.adminKey, claim, {});
		assert.deepEqual(await queue.metrics({ model }), {
			messages_waiting: 2,
			messages_running: 0,
			total_jobs: 2,
		});
	});

	it('invalid model is BadRequestError', async () => {
		const err = await rejection(queue.metrics({ model: 'bad model!' }));
		assertQueueError(err, BadRequestError, 400, 'invalid_request_error', 'invalid_field');
		assert.equal(err.error.param, 'model');
	});

	it('missing model is BadRequestError', async () => {
		const err = await rejection(queue.metrics({}));
		assertQueueError(err, BadRequestError, 400, 'invalid_request_error', 'missing_field');
		assert.equal(err.error.param, 'model');
	});
});

describe('clear', () => {
	let model;
	beforeEach(() => {
		model = freshModel('compat/clear');
	});

	it('cancels pending jobs and leaves running ones', async () => {
		const first = await submitOne(model);
		const claim = await claimJob(server.origin, server.adminKey, model);
		assert.equal(claim.request_id, first);
		const pending = [await submitOne(model), await submitOne(model), await submitOne(model)];

		const { data, response } = await queue.clear({ model }).withResponse();
		assert.equal(response.headers.get('content-type'), 'application/json');
		assert.deepEqual(data, { canceled_count: 3 });

		for (const requestId of pending) {
			const job = await queue.retrieve({ model, request_id: requestId });
			assert.equal(job.status, 'canceled', `job ${requestId}`);
		}
		const running = await queue.retrieve({ model, request_id: first });
		assert.equal(running.status, 'running');
		assert.deepEqual(await queue.metrics({ model }), {
			messages_waiting: 0,
			messages_running: 1,
			total_jobs: 1,
		});
	});

	it('clearing an empty queue cancels nothing', async () => {
		assert.deepEqual(await queue.clear({ model: 'compat/never-used' }), { canceled_count: 0 });
	});

	it('leaves other models alone', async () => {
		const otherJob = await submitOne('compat/clear-kept');
		await submitOne(model);
		assert.deepEqual(await queue.clear({ model }), { canceled_count: 1 });
		const job = await queue.retrieve({ model: 'compat/clear-kept', request_id: otherJob });
		assert.equal(job.status, 'pending');
	});

	it('empty model is BadRequestError', async () => {
		const err = await rejection(queue.clear({ model: '' }));
		assertQueueError(err, BadRequestError, 400, 'invalid_request_error', 'invalid_field');
		assert.equal(err.error.param, 'model');
	});
});
