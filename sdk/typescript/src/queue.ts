/**
 * A bounded FIFO queue: pushing onto a full queue drops the oldest item and returns it, so
 * the caller can tell whoever was waiting for it.
 */
export class BoundedQueue<T> {
  private items: T[] = [];

  /** Creates a queue holding at most `capacity` items (0: nothing is kept). */
  constructor(private readonly capacity: number) {}

  /** Items queued. */
  get size(): number {
    return this.items.length;
  }

  /** Appends `item`; returns the items dropped to make room (oldest first). */
  push(item: T): T[] {
    this.items.push(item);
    const over = this.items.length - Math.max(0, this.capacity);
    return over > 0 ? this.items.splice(0, over) : [];
  }

  /** The items, oldest first, left in place. */
  peek(): readonly T[] {
    return this.items;
  }

  /** Removes and returns every item, oldest first. */
  drain(): T[] {
    const items = this.items;
    this.items = [];
    return items;
  }

  /** Removes one item, wherever it is. */
  remove(item: T): boolean {
    const index = this.items.indexOf(item);
    if (index < 0) return false;
    this.items.splice(index, 1);
    return true;
  }
}
