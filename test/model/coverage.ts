/**
 * What "every state and every transition" means, counted from the machine definition: every state
 * node, and every transition definition (each guarded branch of an event, each `always` branch, and
 * the root's handlers) as its own item. XState has no coverage report of its own.
 */
import type { AnyStateMachine, AnyStateNode, AnyTransitionDefinition } from 'xstate';

export interface Inventory {
  states: Map<AnyStateNode, string>;
  transitions: Map<AnyTransitionDefinition, string>;
}

function describeTransition(node: AnyStateNode, transition: AnyTransitionDefinition, index: number): string {
  const event = transition.eventType === '' ? 'always' : transition.eventType;
  const guard = transition.guard ? ` [${guardName(transition.guard)}]` : '';
  const targets = transition.target?.map((target) => target.id).join(',') ?? '(self)';
  return `${node.id} --${event}#${index}${guard}--> ${targets}`;
}

function guardName(guard: unknown): string {
  if (typeof guard === 'string') return guard;
  if (guard && typeof guard === 'object' && 'type' in guard) return String((guard as { type: string }).type);
  if (typeof guard === 'function') return (guard as { name?: string }).name || 'fn';
  return 'guard';
}

export function inventory(machine: AnyStateMachine): Inventory {
  const states = new Map<AnyStateNode, string>();
  const transitions = new Map<AnyTransitionDefinition, string>();
  const visit = (node: AnyStateNode) => {
    states.set(node, node.id);
    for (const [, definitions] of node.transitions) {
      definitions.forEach((definition, index) => transitions.set(definition, describeTransition(node, definition, index)));
    }
    node.always?.forEach((definition, index) => transitions.set(definition, describeTransition(node, definition, index)));
    for (const child of Object.values(node.states)) visit(child);
  };
  visit(machine.root);
  return { states, transitions };
}

export class CoverageTracker {
  readonly coveredStates = new Set<string>();
  readonly coveredTransitions = new Set<string>();

  constructor(readonly machineInventory: Inventory) {}

  /** A snapshot's active nodes count as covered states. */
  visitSnapshot(snapshot: { _nodes?: AnyStateNode[] }): void {
    for (const node of snapshot._nodes ?? []) {
      const id = this.machineInventory.states.get(node);
      if (id) this.coveredStates.add(id);
    }
  }

  visitTransitions(transitions: readonly AnyTransitionDefinition[]): void {
    for (const transition of transitions) {
      const id = this.machineInventory.transitions.get(transition);
      if (id) this.coveredTransitions.add(id);
    }
  }

  report(): { states: [number, number]; transitions: [number, number]; missingStates: string[]; missingTransitions: string[] } {
    const allStates = [...this.machineInventory.states.values()];
    const allTransitions = [...this.machineInventory.transitions.values()];
    return {
      states: [allStates.filter((id) => this.coveredStates.has(id)).length, allStates.length],
      transitions: [allTransitions.filter((id) => this.coveredTransitions.has(id)).length, allTransitions.length],
      missingStates: allStates.filter((id) => !this.coveredStates.has(id)),
      missingTransitions: allTransitions.filter((id) => !this.coveredTransitions.has(id)),
    };
  }
}
