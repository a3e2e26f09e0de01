import { Emitter, type Unsubscribe } from "./emitter.js";
import { HeraldError } from "./errors.js";
import {
  ErrorCodes,
  isObject,
  type PresenceResult,
  type WirePresenceDiff,
  type WirePresenceMember,
  type WirePresenceState,
} from "./protocol.js";

/** A user's status: `offline` means the user has no connection left. */
export type PresenceStatus = "online" | "away" | "busy" | "offline";

/** The statuses a client may set for its user ({@link HeraldClient.setPresenceState}). */
export type SettableStatus = "online" | "away" | "busy";

/** One connection in a channel's presence (a user with two tabs appears twice). */
export interface PresenceMember {
  /** The user id (the token's `sub`). */
  userId: string;
  /** The connection id. */
  clientId: string;
  /** `info.name` from the user's token, when it is a string. */
  name?: string;
  /** `info.avatar` from the user's token, when it is a string. */
  avatar?: string;
  /** The user's status in the org; `online` when the gateway does not say. */
  status: PresenceStatus;
  /** When the connection joined, Unix milliseconds. */
  joinedAt: number;
  /** The whole `info` claim of the user's token, as data (never render it as HTML). */
  info: Record<string, unknown> | null;
  /** The connection's presence state in this channel (`setPresenceState`), when it has one. */
  state?: unknown;
}

/** Maps the wire shape `{user, client, info:{name, avatar}, status, joinedAt}`. */
export function toMember(wire: WirePresenceMember, status?: PresenceStatus): PresenceMember {
  const info = isObject(wire.info) ? wire.info : null;
  const member: PresenceMember = {
    userId: wire.user,
    clientId: wire.client,
    status: toStatus(wire.status) ?? status ?? "online",
    joinedAt: wire.joinedAt ?? 0,
    info,
  };
  if (typeof info?.["name"] === "string") member.name = info["name"];
  if (typeof info?.["avatar"] === "string") member.avatar = info["avatar"];
  if (wire.state !== undefined && wire.state !== null) member.state = wire.state;
  return member;
}

function toStatus(status: string | undefined): PresenceStatus | undefined {
  return status === "online" || status === "away" || status === "busy" || status === "offline"
    ? status
    : undefined;
}

/** Listener types of a channel's presence. */
export interface PresenceEvents {
  join: (member: PresenceMember) => void;
  leave: (member: PresenceMember) => void;
  update: (members: readonly PresenceMember[]) => void;
  error: (error: HeraldError) => void;
}

/** What a presence tracker needs from its channel. */
export interface PresenceHost {
  readonly channel: string;
  /** Whether the channel's subscription is active on the current connection. */
  isSubscribed(): boolean;
  /** Sends a command on the current connection. */
  request<T>(method: string, params: unknown): Promise<T>;
}

type Change =
  | { kind: "join"; wire: WirePresenceMember }
  | { kind: "leave"; wire: WirePresenceMember }
  | { kind: "diff"; diff: WirePresenceDiff }
  | { kind: "state"; wire: WirePresenceState };

/**
 * A channel's live member list: the `presence` command after each (re)subscribe, then
 * `join` and `leave` pushes (or, on a big channel, `presence` pushes batching them), and
 * `status` pushes from `org:<org>` for the statuses. Pushes that arrive while the list is
 * being fetched are applied after it. Tracking starts the first time someone reads the list
 * or listens, so channels nobody watches cost no command.
 */
export class PresenceTracker {
  private readonly emitter = new Emitter<PresenceEvents>();
  private members: readonly PresenceMember[] = Object.freeze([]);
  private enabled = false;
  private unavailable = false;
  private fetching = 0;
  private buffered: Change[] | null = null;
  private refetchTimer: ReturnType<typeof setTimeout> | undefined;

  /** Creates the tracker of `host`'s channel. */
  constructor(private readonly host: PresenceHost) {}

  /** The current members, oldest first; the array changes identity on every change. */
  getMembers(): readonly PresenceMember[] {
    this.enable();
    return this.members;
  }

  /** The current members without starting to track them. */
  peek(): readonly PresenceMember[] {
    return this.members;
  }

  /** Listens to one kind of change. */
  on<K extends keyof PresenceEvents>(event: K, listener: PresenceEvents[K]): Unsubscribe {
    this.enable();
    return this.emitter.on(event, listener);
  }

  /** Listens to fetch errors without starting to track. */
  onError(listener: (error: HeraldError) => void): Unsubscribe {
    return this.emitter.on("error", listener);
  }

  /** Starts tracking (fetches the list now if subscribed). */
  enable(): void {
    if (this.enabled) return;
    this.enabled = true;
    if (this.host.isSubscribed()) this.fetch();
  }

  /** The subscription became active (again): fetch the list afresh. */
  subscribed(): void {
    if (this.enabled && !this.unavailable) this.fetch();
  }

  /**
   * The connection was lost: stop waiting for a fetch. The list is kept (stale) until the
   * resubscribe fetches it again, so a UI does not flicker through a reconnect.
   */
  suspend(): void {
    this.fetching += 1;
    this.buffered = null;
    clearTimeout(this.refetchTimer);
    this.refetchTimer = undefined;
  }

  /** The subscription ended: forget everything. */
  reset(): void {
    this.fetching += 1;
    this.buffered = null;
    clearTimeout(this.refetchTimer);
    this.refetchTimer = undefined;
    if (this.members.length > 0) {
      this.members = Object.freeze([]);
      this.emitter.emit("update", this.members);
    }
  }

  /** A `join` push. */
  join(wire: WirePresenceMember): void {
    if (this.buffered) this.buffered.push({ kind: "join", wire });
    else if (this.apply({ kind: "join", wire })) this.emitter.emit("update", this.members);
  }

  /** A `leave` push. */
  leave(wire: WirePresenceMember): void {
    if (this.buffered) this.buffered.push({ kind: "leave", wire });
    else if (this.apply({ kind: "leave", wire })) this.emitter.emit("update", this.members);
  }

  /** Tells `update` listeners that something around the list changed (this connection's state). */
  notify(): void {
    this.emitter.emit("update", this.members);
  }

  /** A `state` push: a member's presence state changed. */
  state(wire: WirePresenceState): void {
    if (this.buffered) this.buffered.push({ kind: "state", wire });
    else if (this.apply({ kind: "state", wire })) this.emitter.emit("update", this.members);
  }

  /** A `presence` push: a big channel's joins and leaves, batched. */
  diff(diff: WirePresenceDiff): void {
    if (this.buffered) this.buffered.push({ kind: "diff", diff });
    else if (this.apply({ kind: "diff", diff })) this.emitter.emit("update", this.members);
  }

  /**
   * A `status` push for `user`. On the org's own channel (`org:<org>`), which has no join
   * and leave pushes, `offline` removes the user and an unknown user triggers a refetch.
   */
  status(user: string, status: string, orgRoot: boolean): void {
    const next = toStatus(status);
    if (!next) return;
    let changed = false;
    const members = this.members.map((member) => {
      if (member.userId !== user || member.status === next) return member;
      changed = true;
      return { ...member, status: next };
    });
    if (orgRoot && next === "offline") {
      const kept = members.filter((m) => m.userId !== user);
      const left = members.filter((m) => m.userId === user);
      if (left.length > 0) {
        this.members = Object.freeze(kept);
        for (const member of left) this.emitter.emit("leave", member);
        this.emitter.emit("update", this.members);
      }
      return;
    }
    if (changed) {
      this.members = Object.freeze(members);
      this.emitter.emit("update", this.members);
    } else if (orgRoot && this.enabled && !this.members.some((m) => m.userId === user)) {
      this.scheduleRefetch();
    }
  }

  private scheduleRefetch(): void {
    if (this.refetchTimer !== undefined) return;
    this.refetchTimer = setTimeout(() => {
      this.refetchTimer = undefined;
      if (this.host.isSubscribed()) this.fetch();
    }, 500);
  }

  private fetch(): void {
    const generation = ++this.fetching;
    this.buffered = [];
    this.fetchAll(generation).then(
      (wires) => {
        if (generation !== this.fetching || wires === null) return;
        const buffered = this.buffered ?? [];
        this.buffered = null;
        const members = wires.map((wire) => toMember(wire));
        this.members = Object.freeze(members);
        for (const change of buffered) this.apply(change);
        this.emitter.emit("update", this.members);
      },
      (error: unknown) => {
        if (generation !== this.fetching) return;
        this.buffered = null;
        if (error instanceof HeraldError && error.code === ErrorCodes.notAvailable) {
          // The channel has no presence: nothing to track.
          this.unavailable = true;
          return;
        }
        if (error instanceof HeraldError) this.emitter.emit("error", error);
      },
    );
  }

  /**
   * Every page of the member list (the gateway bounds each reply by bytes and continues
   * from a cursor); null when a newer fetch took over meanwhile.
   */
  private async fetchAll(generation: number): Promise<WirePresenceMember[] | null> {
    const members: WirePresenceMember[] = [];
    let cursor: string | undefined;
    for (;;) {
      const params: { channel: string; cursor?: string } = { channel: this.host.channel };
      if (cursor !== undefined) params.cursor = cursor;
      const page = await this.host.request<PresenceResult>("presence", params);
      if (generation !== this.fetching) return null;
      members.push(...(page.members ?? []));
      if (!page.more || !page.cursor) return members;
      cursor = page.cursor;
    }
  }

  /** Applies a join, leave or diff; emits `join`/`leave` for each member it changed. */
  private apply(change: Change): boolean {
    if (change.kind === "diff") return this.applyDiff(change.diff);
    if (change.kind === "state") {
      const members = withStates(this.members, [change.wire]);
      if (members === this.members) return false;
      this.members = Object.freeze(members);
      return true;
    }
    const index = this.members.findIndex((m) => m.clientId === change.wire.client);
    if (change.kind === "join") {
      if (index >= 0) return false;
      const known = this.members.find((m) => m.userId === change.wire.user);
      const member = toMember(change.wire, known?.status);
      this.members = Object.freeze([...this.members, member]);
      this.emitter.emit("join", member);
      return true;
    }
    if (index < 0) return false;
    const member = this.members[index] as PresenceMember;
    this.members = Object.freeze(this.members.filter((_, i) => i !== index));
    this.emitter.emit("leave", member);
    return true;
  }

  /**
   * Applies a diff's leaves, then its joins, in one pass over the list (a diff can hold
   * thousands of members; one by one would copy the list for each).
   */
  private applyDiff(diff: WirePresenceDiff): boolean {
    const leaving = new Set((diff.leaves ?? []).map((wire) => wire.client));
    const left: PresenceMember[] = [];
    const members: PresenceMember[] = [];
    for (const member of this.members) {
      if (leaving.has(member.clientId)) left.push(member);
      else members.push(member);
    }
    const present = new Set(members.map((member) => member.clientId));
    const statuses = new Map(members.map((member) => [member.userId, member.status]));
    const joined: PresenceMember[] = [];
    for (const wire of diff.joins ?? []) {
      if (present.has(wire.client)) continue;
      const member = toMember(wire, statuses.get(wire.user));
      present.add(member.clientId);
      members.push(member);
      joined.push(member);
    }
    const stated = withStates(members, diff.states ?? []);
    if (left.length === 0 && joined.length === 0 && stated === members) return false;
    this.members = Object.freeze(stated);
    for (const member of left) this.emitter.emit("leave", member);
    for (const member of joined) this.emitter.emit("join", member);
    return true;
  }
}

/** `members` with the states applied (the same array when nothing changed). */
function withStates(
  members: readonly PresenceMember[],
  states: readonly WirePresenceState[],
): readonly PresenceMember[] {
  if (states.length === 0) return members;
  const byClient = new Map(states.map((wire) => [wire.client, wire.state]));
  let changed = false;
  const next = members.map((member) => {
    if (!byClient.has(member.clientId)) return member;
    const state = byClient.get(member.clientId);
    if (state === undefined || state === null) {
      if (member.state === undefined) return member;
      changed = true;
      const { state: _dropped, ...rest } = member;
      return rest;
    }
    changed = true;
    return { ...member, state };
  });
  return changed ? next : members;
}
