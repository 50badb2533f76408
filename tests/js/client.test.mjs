// The browser client without a browser: node's test runner, a scripted WebSocket, mocked timers.
//
//   node --test tests/js/
//
// The real-browser end-to-end tests are in tests/browser/; these pin the protocol details and the
// reconnect schedule exactly, with no network and no waiting.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { afterEach, beforeEach, describe, mock, test } from "node:test";
import vm from "node:vm";

import DefaultExport, {
  DEFAULTS,
  EmitError,
  PleziClient,
  reconnectDelay,
  recoveryUrl,
  rememberPosition,
  resolveUrl,
  subprotocols,
} from "../../src/plezi/web/client/plezi-client.mjs";

const CLIENT_DIR = new URL("../../src/plezi/web/client/", import.meta.url);

/** A WebSocket class whose instances the test drives: open(), receive(), drop(). */
function socketClass() {
  class FakeSocket {
    static instances = [];
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.sent = [];
      this.closed = null;
      FakeSocket.instances.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error("send() on a socket that is not open");
      this.sent.push(data);
    }
    close(code, reason) {
      this.closed = { code, reason };
      this.readyState = 2;
    }
    // -- driven by the test --
    open() {
      this.readyState = 1;
      this.onopen({ type: "open" });
    }
    receive(message) {
      this.onmessage({ data: typeof message === "string" ? message : JSON.stringify(message) });
    }
    drop(code = 1006) {
      this.readyState = 3;
      this.onclose({ type: "close", code });
    }
    get messages() {
      return this.sent.map((data) => JSON.parse(data));
    }
  }
  return FakeSocket;
}

/** A client on a fake socket; no jitter, so the reconnect schedule is exact. */
function makeClient(options = {}) {
  const WS = socketClass();
  const client = new PleziClient("ws://test/chat", {
    WebSocket: WS,
    jitter: 0,
    minDelay: 100,
    maxDelay: 1000,
    ...options,
  });
  return { client, WS, socket: () => WS.instances.at(-1) };
}

beforeEach(() => {
  mock.timers.enable({ apis: ["setTimeout"] });
});

afterEach(() => {
  mock.timers.reset();
  mock.restoreAll();
});

describe("reconnectDelay", () => {
  test("grows by the factor from minDelay and stops at maxDelay", () => {
    const options = { minDelay: 250, maxDelay: 5000, factor: 2, jitter: 0 };
    const delays = [0, 1, 2, 3, 4, 5, 6, 50, 5000].map((n) => reconnectDelay(n, options));
    assert.deepEqual(delays, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000, 5000]);
  });

  test("jitter takes up to its fraction off each delay", () => {
    const options = { minDelay: 1000, maxDelay: 1000, jitter: 0.4 };
    assert.equal(reconnectDelay(0, options, () => 0), 1000);
    assert.equal(reconnectDelay(0, options, () => 0.5), 800);
    assert.equal(reconnectDelay(0, options, () => 0.999999), 600);
    for (let i = 0; i < 200; i++) {
      const delay = reconnectDelay(3, options);
      assert.ok(delay >= 600 && delay <= 1000, `delay ${delay} out of bounds`);
    }
  });

  test("the defaults start at 250 ms, cap at 10 s, and jitter by half", () => {
    assert.equal(reconnectDelay(0, {}, () => 0), DEFAULTS.minDelay);
    assert.equal(reconnectDelay(0, {}, () => 0), 250);
    assert.equal(reconnectDelay(99, {}, () => 0), 10000);
    assert.equal(reconnectDelay(99, {}, () => 1), 5000);
  });
});

describe("resolveUrl", () => {
  const page = {
    href: "https://example.com:8443/rooms/7?x=1#top",
    pathname: "/rooms/7",
    protocol: "https:",
    host: "example.com:8443",
  };

  test("defaults to the page's own path, wss: for an https: page", () => {
    assert.equal(resolveUrl(undefined, page), "wss://example.com:8443/rooms/7");
    assert.equal(
      resolveUrl(undefined, { ...page, href: "http://h/a/b", pathname: "/a/b" }),
      "ws://h/a/b",
    );
  });

  test("resolves relative paths and converts http(s) to ws(s)", () => {
    assert.equal(resolveUrl("/chat", page), "wss://example.com:8443/chat");
    assert.equal(resolveUrl("http://other:81/x#frag", page), "ws://other:81/x");
    assert.equal(resolveUrl("wss://w/y?q=1"), "wss://w/y?q=1");
  });

  test("refuses other schemes, and a missing URL outside a browser", () => {
    assert.throws(() => resolveUrl("ftp://x/", page), TypeError);
    assert.throws(() => resolveUrl(undefined, undefined), TypeError);
    assert.throws(() => resolveUrl("/relative", undefined), TypeError);
  });

  test("the constructor uses the page location, and PleziClient.origin matches it", (t) => {
    t.after(() => delete globalThis.location);
    globalThis.location = page;
    const client = new PleziClient(undefined, { WebSocket: socketClass() });
    assert.equal(client.url, "wss://example.com:8443/rooms/7");
    assert.equal(PleziClient.origin, "wss://example.com:8443");
    client.close();
  });

  test("the constructor refuses to run without a WebSocket class", () => {
    assert.equal(globalThis.WebSocket, undefined, "node 20 has no global WebSocket");
    assert.throws(() => new PleziClient("ws://x/"), /no WebSocket class/);
  });
});

describe("sending", () => {
  test("emit(msg) sends JSON text at once when connected", () => {
    const { client, socket } = makeClient();
    socket().open();
    assert.equal(client.emit({ event: "chat", text: "hi" }), true);
    assert.deepEqual(socket().messages, [{ event: "chat", text: "hi" }]);
  });

  test("messages emitted before the connection opens are sent, in order, before onopen", () => {
    const { client, socket } = makeClient();
    const seenAtOpen = [];
    client.onopen = () => seenAtOpen.push(socket().sent.length);
    assert.equal(client.emit({ event: "a" }), true);
    assert.equal(client.emit({ event: "b" }), true);
    assert.equal(client.queued, 2);
    assert.equal(client.connected, false);
    socket().open();
    assert.equal(client.connected, true);
    assert.deepEqual(
      socket().messages.map((m) => m.event),
      ["a", "b"],
    );
    assert.deepEqual(seenAtOpen, [2]);
    assert.equal(client.queued, 0);
  });

  test("the queue is bounded: past queueLimit emits are refused", async () => {
    const { client, socket } = makeClient({ queueLimit: 2 });
    assert.equal(client.emit({ event: "1" }), true);
    assert.equal(client.emit({ event: "2" }), true);
    assert.equal(client.emit({ event: "3" }), false);
    await assert.rejects(client.emit({ event: "4" }, { timeout: 50 }), { name: "QueueFullError" });
    socket().open();
    assert.deepEqual(
      socket().messages.map((m) => m.event),
      ["1", "2"],
    );
  });

  test("emit with options adds an _EID_ (without touching the caller's object)", () => {
    const { client, socket } = makeClient();
    socket().open();
    const msg = { event: "chat", text: "x" };
    client.emit(msg, { timeout: 100 }).catch(() => {});
    client.emit(msg, { timeout: 100 }).catch(() => {});
    assert.deepEqual(msg, { event: "chat", text: "x" });
    const [first, second] = socket().messages;
    assert.equal(first.event, "chat");
    assert.equal(typeof first._EID_, "number");
    assert.notEqual(first._EID_, second._EID_);
  });
});

describe("acks and errors", () => {
  test("the promise resolves with the _ack_ message", async () => {
    const { client, socket } = makeClient();
    socket().open();
    const seen = [];
    client.unknown = (msg) => seen.push(["unknown", msg.event]);
    client._ack_ = (msg) => seen.push(["_ack_", msg._EID_]);
    const promise = client.emit({ event: "chat" }, { timeout: 1000 });
    const eid = socket().messages[0]._EID_;
    socket().receive({ event: "_ack_", _EID_: eid });
    assert.deepEqual(await promise, { event: "_ack_", _EID_: eid });
    // Plezi's client hands acks to an `_ack_` handler too, never to `unknown`.
    assert.deepEqual(seen, [["_ack_", eid]]);
  });

  test("an ack for someone else's id, or a late one, changes nothing", async () => {
    const { client, socket } = makeClient();
    socket().open();
    const promise = client.emit({ event: "chat" }, { timeout: 1000 });
    socket().receive({ event: "_ack_", _EID_: 999 });
    mock.timers.tick(1000);
    await assert.rejects(promise, { name: "TimeoutError" });
    socket().receive({ event: "_ack_", _EID_: socket().messages[0]._EID_ });
  });

  test("no ack in time: rejected with TimeoutError", async () => {
    const { client, socket } = makeClient();
    socket().open();
    let settled = false;
    const promise = client.emit({ event: "chat" }, { timeout: 300 });
    promise.then(
      () => (settled = true),
      () => (settled = true),
    );
    mock.timers.tick(299);
    await Promise.resolve();
    assert.equal(settled, false);
    mock.timers.tick(1);
    await assert.rejects(promise, (err) => err instanceof EmitError && err.name === "TimeoutError");
  });

  test("the default ack timeout is options.ackTimeout", async () => {
    const { client, socket } = makeClient({ ackTimeout: 700 });
    socket().open();
    const promise = client.emit({ event: "chat" }, {});
    mock.timers.tick(700);
    await assert.rejects(promise, { name: "TimeoutError" });
  });

  test("a queued emit that times out is dropped, never sent later", async () => {
    const { client, socket } = makeClient();
    const promise = client.emit({ event: "late" }, { timeout: 200 });
    client.emit({ event: "kept" });
    mock.timers.tick(200);
    await assert.rejects(promise, { name: "TimeoutError" });
    assert.equal(client.queued, 1);
    socket().open();
    assert.deepEqual(
      socket().messages.map((m) => m.event),
      ["kept"],
    );
  });

  test("an _err_ reply with the _EID_ rejects with the status; handlers still see it", async () => {
    const { client, socket } = makeClient();
    socket().open();
    const unknown = [];
    client.unknown = (msg) => unknown.push(msg);
    const promise = client.emit({ event: "nope" }, { timeout: 1000 });
    const eid = socket().messages[0]._EID_;
    const reply = {
      event: "_err_",
      status: 404,
      error: "no such event: nope",
      _EID_: eid,
      request: { event: "nope", _EID_: eid },
    };
    socket().receive(reply);
    await assert.rejects(promise, (err) => {
      assert.equal(err.name, "ServerError");
      assert.equal(err.status, 404);
      assert.deepEqual(err.reply, reply);
      return true;
    });
    assert.deepEqual(unknown, [reply]);
    // With an `_err_` handler, that gets it instead of `unknown`.
    const errors = [];
    client._err_ = (msg) => errors.push(msg.status);
    socket().receive({ event: "_err_", status: 400, error: "invalid JSON", request: "x" });
    assert.deepEqual(errors, [400]);
    assert.equal(unknown.length, 1);
  });
});

describe("receiving", () => {
  test("property handlers and on() listeners both get the message", () => {
    const { client, socket } = makeClient();
    socket().open();
    const seen = [];
    client.chat = function (msg) {
      seen.push(["property", msg.text, this === client]);
    };
    const listener = (msg) => seen.push(["listener", msg.text]);
    client.on("chat", listener);
    client.on("chat", (msg) => seen.push(["second", msg.text]));
    socket().receive({ event: "chat", text: "hi" });
    client.off("chat", listener);
    socket().receive({ event: "chat", text: "again" });
    assert.deepEqual(seen, [
      ["property", "hi", true],
      ["listener", "hi"],
      ["second", "hi"],
      ["property", "again", true],
      ["second", "again"],
    ]);
  });

  test("unknown gets what no handler takes", () => {
    const { client, socket } = makeClient();
    socket().open();
    const seen = [];
    client.unknown = (msg) => seen.push(msg);
    socket().receive({ event: "other", n: 1 });
    socket().receive({ no: "event" });
    socket().receive([1, 2]);
    assert.deepEqual(seen, [{ event: "other", n: 1 }, { no: "event" }, [1, 2]]);
  });

  test("a server event can never call the client's own methods or lifecycle callbacks", () => {
    const { client, socket } = makeClient();
    socket().open();
    const calls = [];
    client.onopen = () => calls.push("onopen");
    client.onclose = () => calls.push("onclose");
    client.onerror = () => calls.push("onerror");
    client.unknown = (msg) => calls.push(`unknown:${msg.event}`);
    for (const event of [
      "emit", "close", "on", "off", "constructor", "toString", "__proto__", "hasOwnProperty",
      "onopen", "onclose", "onerror",
    ]) {
      socket().receive({ event });
    }
    assert.equal(client.connected, true);
    assert.equal(socket().closed, null);
    assert.deepEqual(calls, [
      "unknown:emit", "unknown:close", "unknown:on", "unknown:off", "unknown:constructor",
      "unknown:toString", "unknown:__proto__", "unknown:hasOwnProperty", "unknown:onopen",
      "unknown:onclose", "unknown:onerror",
    ]);
  });

  test("a subclass's methods are handlers too", () => {
    const WS = socketClass();
    const seen = [];
    class Room extends PleziClient {
      chat(msg) {
        seen.push(msg.text);
      }
    }
    const client = new Room("ws://test/", { WebSocket: WS });
    WS.instances[0].open();
    WS.instances[0].receive({ event: "chat", text: "sub" });
    assert.deepEqual(seen, ["sub"]);
    client.close();
  });

  test("a failing handler is logged and the others still run; bad JSON is only a warning", () => {
    const { client, socket } = makeClient();
    socket().open();
    const error = mock.method(console, "error", () => {});
    const warn = mock.method(console, "warn", () => {});
    const seen = [];
    client.chat = () => {
      throw new Error("boom");
    };
    client.on("chat", () => seen.push("listener"));
    socket().receive({ event: "chat" });
    socket().receive("not json {");
    assert.deepEqual(seen, ["listener"]);
    assert.equal(error.mock.callCount(), 1);
    assert.equal(warn.mock.callCount(), 1);
  });
});

describe("reconnecting", () => {
  test("reconnects with exponential backoff, and the schedule restarts after a success", () => {
    const { client, WS, socket } = makeClient({ minDelay: 100, maxDelay: 350, factor: 2 });
    const closes = [];
    client.onclose = (event) => closes.push(event.code);
    socket().open();
    socket().drop(1001);
    assert.deepEqual(closes, [1001]);
    const expectNewSocketAfter = (ms) => {
      const count = WS.instances.length;
      mock.timers.tick(ms - 1);
      assert.equal(WS.instances.length, count, `no new socket before ${ms} ms`);
      mock.timers.tick(1);
      assert.equal(WS.instances.length, count + 1, `a new socket after ${ms} ms`);
    };
    expectNewSocketAfter(100);
    socket().drop(); // refused
    expectNewSocketAfter(200);
    socket().drop();
    expectNewSocketAfter(350); // capped
    socket().drop();
    expectNewSocketAfter(350);
    socket().open();
    socket().drop();
    expectNewSocketAfter(100); // back to the start
    assert.equal(WS.instances.every((ws) => ws.url === "ws://test/chat"), true);
    client.close();
  });

  test("messages emitted while offline go out, in order, on the next connection", async () => {
    const { client, socket } = makeClient();
    socket().open();
    socket().drop();
    assert.equal(client.emit({ event: "one" }), true);
    const acked = client.emit({ event: "two" }, { timeout: 5000 });
    mock.timers.tick(100);
    socket().open();
    const sent = socket().messages;
    assert.deepEqual(
      sent.map((m) => m.event),
      ["one", "two"],
    );
    socket().receive({ event: "_ack_", _EID_: sent[1]._EID_ });
    assert.equal((await acked).event, "_ack_");
  });

  test("a message from a replaced socket is ignored", () => {
    const { client, WS } = makeClient();
    const first = WS.instances[0];
    first.open();
    first.drop();
    mock.timers.tick(100);
    const seen = [];
    client.chat = (msg) => seen.push(msg.n);
    first.receive({ event: "chat", n: 1 });
    WS.instances[1].open();
    WS.instances[1].receive({ event: "chat", n: 2 });
    assert.deepEqual(seen, [2]);
  });

  test("reconnect: false leaves it closed; queued emits are refused", async () => {
    const { client, WS, socket } = makeClient({ reconnect: false });
    const promise = client.emit({ event: "queued" }, { timeout: 5000 });
    socket().drop();
    await assert.rejects(promise, { name: "ClosedError" });
    mock.timers.tick(60000);
    assert.equal(WS.instances.length, 1);
    assert.equal(client.emit({ event: "x" }), false);
    await assert.rejects(client.emit({ event: "x" }, { timeout: 10 }), { name: "ClosedError" });
  });

  test("Plezi's (url, autoreconnect) arguments and its autoreconnect property work", (t) => {
    const WS = socketClass();
    t.after(() => delete globalThis.WebSocket);
    globalThis.WebSocket = WS; // a browser's global WebSocket
    const client = new PleziClient("ws://test/", false);
    assert.equal(client.autoreconnect, false);
    assert.equal(WS.instances.length, 1);
    client.close();
    const other = new PleziClient("ws://test/", { WebSocket: WS, reconnect: true });
    other.autoreconnect = false;
    WS.instances[1].drop();
    mock.timers.tick(60000);
    assert.equal(WS.instances.length, 2);
  });

  test("close() stays closed: no reconnect, pending emits rejected, nothing queued", async () => {
    const { client, WS, socket } = makeClient();
    socket().open();
    const pending = client.emit({ event: "chat" }, { timeout: 5000 });
    const closes = [];
    client.onclose = () => closes.push("closed");
    client.close();
    assert.deepEqual(socket().closed, { code: 1000, reason: "" });
    await assert.rejects(pending, { name: "ClosedError" });
    socket().drop(1000);
    assert.deepEqual(closes, ["closed"]);
    mock.timers.tick(60000);
    assert.equal(WS.instances.length, 1);
    assert.equal(client.emit({ event: "after" }), false);
    assert.equal(client.queued, 0);
    client.close(); // twice is fine
  });

  test("close() during a backoff wait cancels the attempt", () => {
    const { client, WS, socket } = makeClient();
    socket().open();
    socket().drop();
    client.close();
    mock.timers.tick(60000);
    assert.equal(WS.instances.length, 1);
  });
});

describe("recovery", () => {
  const pos = (channel, epoch, offset) => ({ channel, epoch, offset });

  test("recoveryUrl puts the positions in _recover, or takes the parameter away", () => {
    const positions = new Map([["chat", { epoch: "e1", offset: 7 }]]);
    const url = new URL(recoveryUrl("ws://test/chat?room=1", positions));
    assert.equal(url.searchParams.get("room"), "1");
    assert.deepEqual(JSON.parse(url.searchParams.get("_recover")), { chat: ["e1", 7] });
    assert.equal(recoveryUrl(url.href, new Map()), "ws://test/chat?room=1");
  });

  test("rememberPosition keeps the newest offset of an epoch, and a new epoch", () => {
    const positions = new Map();
    assert.ok(rememberPosition(positions, pos("chat", "e1", 3)));
    assert.ok(!rememberPosition(positions, pos("chat", "e1", 2)));
    assert.ok(rememberPosition(positions, pos("chat", "e2", 1)));
    for (const bad of [undefined, null, { channel: "chat" }, pos("chat", "e2", 1.5)]) {
      assert.ok(!rememberPosition(positions, bad));
    }
    assert.deepEqual([...positions], [["chat", { epoch: "e2", offset: 1 }]]);
  });

  test("a reconnect sends the last positions; onrecover hears the outcome", () => {
    const { client, WS, socket } = makeClient();
    const seen = [];
    const outcomes = [];
    client.chat = (msg) => seen.push(msg.n);
    client.onrecover = (outcome) => outcomes.push(outcome);
    client.unknown = (msg) => assert.fail(`unknown got ${JSON.stringify(msg)}`);
    socket().open();
    assert.equal(socket().url, "ws://test/chat");
    socket().receive({ event: "chat", n: 1, _pos: pos("chat", "e1", 1) });
    socket().receive({ event: "chat", n: 2, _pos: pos("chat", "e1", 2) });
    socket().receive({ event: "other", _pos: pos("news", "e9", 40) });
    assert.deepEqual(client.positions, { chat: ["e1", 2], news: ["e9", 40] });
    socket().drop();
    mock.timers.tick(100);
    assert.equal(WS.instances.length, 2);
    const sent = new URL(socket().url).searchParams.get("_recover");
    assert.deepEqual(JSON.parse(sent), { chat: ["e1", 2], news: ["e9", 40] });
    socket().open();
    const notice = { event: "_recover_", channel: "chat", recovered: true, epoch: "e1", offset: 3 };
    socket().receive(notice);
    assert.deepEqual(client.positions.chat, ["e1", 2]); // moved by the replayed messages only
    socket().receive({ event: "chat", n: 3, _pos: pos("chat", "e1", 3) });
    socket().receive({ event: "_recover_", channel: "news", recovered: false, epoch: "f", offset: 5 });
    assert.deepEqual(outcomes, [
      { channel: "chat", recovered: true },
      { channel: "news", recovered: false },
    ]);
    assert.deepEqual(seen, [1, 2, 3]);
    assert.deepEqual(client.positions, { chat: ["e1", 3], news: ["f", 5] });
    client.close();
  });

  test("options.positions seeds the first connection", () => {
    const { client, socket } = makeClient({ positions: { chat: ["e1", 4] } });
    const sent = new URL(socket().url).searchParams.get("_recover");
    assert.deepEqual(JSON.parse(sent), { chat: ["e1", 4] });
    client.close();
  });
});

describe("builds", () => {
  test("the default export is PleziClient", () => {
    assert.equal(DefaultExport, PleziClient);
  });

  test("the classic build defines the global PleziClient with the same behaviour", () => {
    const source = readFileSync(new URL("client.js", CLIENT_DIR), "utf8");
    const context = {
      console,
      URL,
      setTimeout: (...args) => setTimeout(...args),
      clearTimeout: (...args) => clearTimeout(...args),
    };
    context.globalThis = context;
    vm.createContext(context);
    vm.runInContext(source, context, { filename: "client.js" });
    const Classic = context.PleziClient;
    assert.equal(typeof Classic, "function");
    assert.equal(typeof Classic.reconnectDelay, "function");
    assert.equal(typeof Classic.EmitError, "function");
    assert.deepEqual(Object.keys(context).sort(), [
      "PleziClient", "URL", "clearTimeout", "console", "globalThis", "setTimeout",
    ]);
    const WS = socketClass();
    const client = new Classic("ws://test/", { WebSocket: WS });
    const seen = [];
    client.chat = (msg) => seen.push(msg.text);
    WS.instances[0].open();
    client.emit({ event: "chat", text: "classic" });
    WS.instances[0].receive({ event: "chat", text: "back" });
    assert.deepEqual(WS.instances[0].messages, [{ event: "chat", text: "classic" }]);
    assert.deepEqual(seen, ["back"]);
    client.close();
  });
});

describe("token", () => {
  const decode = (name) =>
    Buffer.from(name.slice("base64url.bearer.plezi.".length), "base64url").toString("utf8");

  test("without a token the protocols are the caller's, untouched", () => {
    assert.equal(subprotocols({}), undefined);
    assert.deepEqual(subprotocols({ protocols: ["chat"] }), ["chat"]);
    const { socket } = makeClient();
    assert.equal(socket().protocols, undefined);
  });

  test("a token is offered as plezi plus base64url.bearer.plezi.<its UTF-8 in base64url>", () => {
    const token = "user 42.é✓/+=";
    const { socket } = makeClient({ token });
    const [plezi, carrier, ...rest] = socket().protocols;
    assert.equal(plezi, "plezi");
    assert.deepEqual(rest, []);
    assert.match(carrier, /^base64url\.bearer\.plezi\.[A-Za-z0-9_-]+$/); // an HTTP token
    assert.equal(decode(carrier), token);
  });

  test("the caller's protocols come first, and plezi is offered once", () => {
    const offered = subprotocols({ protocols: ["chat", "plezi"], token: "t" });
    assert.deepEqual(offered.slice(0, 2), ["chat", "plezi"]);
    assert.equal(offered.length, 3);
    assert.deepEqual(subprotocols({ protocols: "chat", token: "t" }).slice(0, 2), ["chat", "plezi"]);
  });

  test("a token function is asked again before each reconnect", () => {
    let issued = 0;
    const { socket } = makeClient({ token: () => `t${++issued}` });
    assert.equal(decode(socket().protocols[1]), "t1");
    socket().drop();
    mock.timers.tick(100);
    assert.equal(decode(socket().protocols[1]), "t2");
  });
});
