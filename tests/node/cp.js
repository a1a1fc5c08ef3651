// ocpp-rpc charge points for the relay tests and bench (strict mode unless told otherwise).
// Usage: node cp.js '{"endpoint":"ws://127.0.0.1:9000/ocpp","ids":["CP1"],"protocol":"ocpp1.6",
//                     "mode":"session","meter":2,"stepMs":0,"closeCode":4001,"closeReason":"bye"}'
// mode "session": plug-charge-idle-leave, then close (or wait for stdin {"cmd":"close",...}).
// mode "bench": every id boots, then sends `messages` MeterValues (back to back, or one every
//               `intervalMs` when set); prints latency figures. With "endpoints": [a, b, ...] the ids
//               are dealt round robin over them, all calling in the same seconds, and the figures
//               are also given per endpoint ("groups"): a paired comparison of two paths.
// Prints JSON lines: open, msg (raw frame + sha256), done, close, error, bench.
'use strict';
const crypto = require('crypto');
const readline = require('readline');
const { RPCClient } = require('ocpp-rpc');

const opts = Object.assign(
    {
        protocol: 'ocpp1.6', mode: 'session', meter: 2, stepMs: 0, log: true, strict: true,
        messages: 20, connectConcurrency: 50, idTag: 'RFID-0042', holdOpen: false,
        closeCode: 1000, closeReason: '', password: null, intervalMs: 0,
    },
    JSON.parse(process.argv[2] || '{}'),
);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const sha = (m) => crypto.createHash('sha256').update(typeof m === 'string' ? Buffer.from(m, 'utf8') : m).digest('hex');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => new Date().toISOString();
const clients = new Map();

function makeClient(id, endpoint) {
    const cli = new RPCClient({
        endpoint: endpoint || opts.endpoint, identity: id, protocols: [opts.protocol], strictMode: opts.strict,
        reconnect: false, password: opts.password || undefined, callTimeoutMs: 30000, pingIntervalMs: 60000,
    });
    if (opts.log) {
        cli.on('message', ({ message, outbound }) => {
            const text = typeof message === 'string' ? message : message.toString('utf8');
            out({ ev: 'msg', id, dir: outbound ? 'out' : 'in', sha: sha(message), text });
        });
    }
    cli.on('close', ({ code, reason }) => out({ ev: 'close', id, code, reason: String(reason) }));
    cli.handle('GetConfiguration', () => ({ configurationKey: [{ key: 'HeartbeatInterval', readonly: false, value: '300' }] }));
    cli.handle('GetVariables', ({ params }) => ({
        getVariableResult: params.getVariableData.map((d) => ({
            attributeStatus: 'Accepted', component: d.component, variable: d.variable, attributeValue: '300',
        })),
    }));
    clients.set(id, cli);
    return cli;
}

const energy16 = (wh) => [{ timestamp: now(), sampledValue: [{ value: String(wh), measurand: 'Energy.Active.Import.Register', unit: 'Wh', context: 'Sample.Periodic' }] }];
const energy201 = (wh, context) => [{ timestamp: now(), sampledValue: [{ value: wh, measurand: 'Energy.Active.Import.Register', context, unitOfMeasure: { unit: 'Wh' } }] }];

async function session16(cli) {
    const step = () => sleep(opts.stepMs);
    const status = (s) => cli.call('StatusNotification', { connectorId: 1, errorCode: 'NoError', status: s, timestamp: now() });
    await cli.call('BootNotification', { chargePointVendor: 'Baywarden', chargePointModel: 'relay-test' });
    await status('Available'); await step();
    await status('Preparing'); await step();
    const start = await cli.call('StartTransaction', { connectorId: 1, idTag: opts.idTag, meterStart: 1000, timestamp: now() });
    const tx = start.transactionId;
    await status('Charging'); await step();
    for (let i = 1; i <= opts.meter; i++) {
        await cli.call('MeterValues', { connectorId: 1, transactionId: tx, meterValue: energy16(1000 + i * 500) });
        await step();
    }
    await status('SuspendedEV'); await step();
    await cli.call('StopTransaction', { transactionId: tx, meterStop: 1000 + opts.meter * 500, timestamp: now(), reason: 'EVDisconnected' });
    await status('Finishing'); await step();
    await status('Available');
    return tx;
}

async function session201(cli, id) {
    const step = () => sleep(opts.stepMs);
    const txId = `tx-${id}`;
    let seq = 0;
    const ev = (eventType, triggerReason, chargingState, extra) => cli.call('TransactionEvent', Object.assign({
        eventType, timestamp: now(), triggerReason, seqNo: seq++,
        transactionInfo: Object.assign({ transactionId: txId }, chargingState ? { chargingState } : {}),
    }, extra || {}));
    const status = (s) => cli.call('StatusNotification', { timestamp: now(), connectorStatus: s, evseId: 1, connectorId: 1 });
    await cli.call('BootNotification', { reason: 'PowerUp', chargingStation: { model: 'relay-test', vendorName: 'Baywarden' } });
    await status('Available'); await step();
    await status('Occupied'); await step();
    await ev('Started', 'CablePluggedIn', 'EVConnected', {
        evse: { id: 1, connectorId: 1 }, idToken: { idToken: opts.idTag, type: 'ISO14443' },
        meterValue: energy201(1000, 'Transaction.Begin'),
    });
    await step();
    await ev('Updated', 'ChargingStateChanged', 'Charging'); await step();
    for (let i = 1; i <= opts.meter; i++) {
        await ev('Updated', 'MeterValuePeriodic', null, { meterValue: energy201(1000 + i * 500, 'Sample.Periodic') });
        await step();
    }
    await ev('Updated', 'ChargingStateChanged', 'SuspendedEV'); await step();
    await ev('Ended', 'EVDeparted', 'Idle', { transactionInfo: { transactionId: txId, chargingState: 'Idle', stoppedReason: 'EVDisconnected' }, meterValue: energy201(1000 + opts.meter * 500, 'Transaction.End') });
    await step();
    await status('Available');
    return txId;
}

async function runSession(id) {
    const cli = makeClient(id);
    try {
        await cli.connect();
        out({ ev: 'open', id, protocol: cli.protocol });
        const tx = opts.protocol === 'ocpp1.6' ? await session16(cli) : await session201(cli, id);
        out({ ev: 'done', id, tx: String(tx) });
        if (!opts.holdOpen) await cli.close({ code: opts.closeCode, reason: opts.closeReason });
    } catch (e) {
        out({ ev: 'error', id, code: e.code || null, error: String(e.message || e) });
    }
}

function percentile(sorted, p) {
    return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null;
}

function figures(lat) {
    lat.sort((a, b) => a - b);
    return { calls: lat.length, p50_ms: percentile(lat, 0.5), p99_ms: percentile(lat, 0.99),
             p999_ms: percentile(lat, 0.999), max_ms: lat.length ? lat[lat.length - 1] : null };
}

async function runBench() {
    const ids = opts.ids;
    const endpoints = opts.endpoints || [opts.endpoint];
    // Connect in waves so a 1,000-charger start does not look like a SYN flood.
    const ready = [];
    for (let i = 0; i < ids.length; i += opts.connectConcurrency) {
        const wave = ids.slice(i, i + opts.connectConcurrency).map(async (id, k) => {
            const cli = makeClient(id, endpoints[(i + k) % endpoints.length]);
            await cli.connect();
            await cli.call('BootNotification', opts.protocol === 'ocpp1.6'
                ? { chargePointVendor: 'Baywarden', chargePointModel: 'bench' }
                : { reason: 'PowerUp', chargingStation: { model: 'bench', vendorName: 'Baywarden' } });
            return cli;
        });
        ready.push(...(await Promise.all(wave)));
    }
    const lat = [];
    const perGroup = endpoints.map(() => []);
    const t0 = process.hrtime.bigint();
    // intervalMs > 0: open loop, each charger calls every intervalMs from a random phase, and a
    // call's latency counts from when it was due, so a late answer also delays the calls behind it
    // (no coordinated omission). 0: closed loop, every charger calls again as soon as answered.
    const paced = opts.intervalMs > 0;
    const ms = () => Number(process.hrtime.bigint() - t0) / 1e6;
    await Promise.all(ready.map(async (cli, n) => {
        const phase = paced ? Math.random() * opts.intervalMs : 0;
        const group = perGroup[n % endpoints.length];
        for (let i = 0; i < opts.messages; i++) {
            const params = opts.protocol === 'ocpp1.6'
                ? { connectorId: 1, transactionId: n + 1, meterValue: energy16(1000 + i) }
                : { evseId: 1, meterValue: energy201(1000 + i, 'Sample.Periodic') };
            let due = ms();
            if (paced) {
                due = phase + i * opts.intervalMs;
                const wait = due - ms();
                if (wait > 0) await sleep(wait);
            }
            // A timer may fire a little early (whole-ms clock): then the call counts from when it went.
            const start = Math.min(due, ms());
            await cli.call('MeterValues', params);
            const took = ms() - start;
            lat.push(took);
            group.push(took);
        }
    }));
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    out(Object.assign({ ev: 'bench', chargers: ready.length, seconds, rate: lat.length / seconds }, figures(lat), {
        groups: perGroup.map((g, k) => Object.assign({ endpoint: endpoints[k], rate: g.length / seconds }, figures(g))),
    }));
    await Promise.all(ready.map((cli) => cli.close({ force: true })));
}

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
    let cmd;
    try { cmd = JSON.parse(line); } catch (e) { return; }
    if (cmd.cmd === 'close') {
        const c = clients.get(cmd.id);
        if (c) await c.close({ code: cmd.code || 1000, reason: cmd.reason || '' });
    }
});

(async () => {
    if (opts.mode === 'bench') await runBench();
    else await Promise.all(opts.ids.map(runSession));
    out({ ev: 'finished' });
    if (!opts.holdOpen) process.exit(0);
})().catch((e) => { out({ ev: 'error', error: String(e && e.stack || e) }); process.exit(1); });
