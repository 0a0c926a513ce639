/**
 * The statechart as Mermaid `stateDiagram-v2` text, read from the machine's StateNode tree at build
 * time so the picture cannot drift from the code. `machine.toJSON()` is not used: it drops `and()`
 * guards and inline actions, and an edge that lost its guard looks unconditional.
 */
import type { AnyStateMachine, AnyStateNode } from 'xstate';

/** One drawn edge; several transitions between the same pair of nodes share one. */
export interface EdgeInfo {
  from: string;
  to: string;
  labels: string[];
}

export interface StateInfo {
  /** Dotted path as traces record it (`flow.resource.discovering`); `''` for the root. */
  path: string;
  /** Mermaid node id. */
  id: string;
  key: string;
  type: AnyStateNode['type'];
  tags: string[];
  entry: string[];
  initial?: string;
  /** Outgoing transitions in priority order, as the page lists them for the active state. */
  transitions: Array<{ label: string; target: string }>;
}

export interface Statechart {
  machineId: string;
  mermaid: string;
  rootId: string;
  states: Record<string, StateInfo>;
  edges: EdgeInfo[];
  /** Things that cannot be shown faithfully (inline functions); the build prints them. */
  warnings: string[];
}

/** Tags the page styles, with the class each becomes; other tags still show in the details panel. */
export const TAG_CLASSES: Record<string, string> = { settled: 'tagSettled', busy: 'tagBusy', waiting: 'tagWaiting' };

// The page's CSS repeats the two active styles: Mermaid's own cluster CSS outranks a classDef fill
// on nested composite states. They stay here so the .mmd highlights wherever else it is rendered.
const CLASS_DEFS = [
  'classDef tagSettled stroke:#2e7d32,stroke-width:2px',
  'classDef tagBusy stroke:#1565c0,stroke-width:2px,stroke-dasharray:6 3',
  'classDef tagWaiting stroke:#ef6c00,stroke-width:3px',
  'classDef active fill:#ffb74d,stroke:#e65100,stroke-width:3px',
  'classDef activeAncestor fill:#fff3e0',
];

/** Mermaid node ids must be plain words; a prefix keeps state keys such as `end` from reading as keywords. */
export function nodeIdFor(path: readonly string[]): string {
  return `S_${path.map((segment) => segment.replace(/[^A-Za-z0-9]/g, (c) => `_x${c.charCodeAt(0).toString(16)}_`)).join('__')}`;
}

const ROOT_ID = 'ROOT';

/** Mermaid treats `#`, `;`, `:`, angle brackets and quotes as syntax; its entity codes keep them text. */
function escapeText(text: string): string {
  return text.replace(/[#;:<>"{}]/g, (c) => `#${c.charCodeAt(0)};`);
}

interface GuardLike {
  type?: string;
  params?: unknown;
  guards?: unknown[];
  stateValue?: unknown;
  name?: string;
}

function describeGuard(guard: unknown, where: string, warnings: string[], nested = false): string {
  if (typeof guard === 'string') return guard;
  if (typeof guard === 'function') {
    const g = guard as GuardLike;
    const parts = (g.guards ?? []).map((inner) => describeGuard(inner, where, warnings, true));
    switch (g.name) {
      case 'and':
      case 'or': {
        const text = parts.join(` ${g.name} `);
        return nested ? `(${text})` : text;
      }
      case 'not':
        return `not ${parts[0] ?? '?'}`;
      case 'stateIn':
        return `in ${typeof g.stateValue === 'string' ? g.stateValue : JSON.stringify(g.stateValue)}`;
      default:
        warnings.push(`${where}: inline guard function${g.name ? ` ${g.name}` : ''}; name it in setup({ guards })`);
        return g.name ? `inline ${g.name}` : 'inline guard';
    }
  }
  if (guard && typeof guard === 'object' && typeof (guard as GuardLike).type === 'string') {
    const g = guard as GuardLike;
    return g.params === undefined ? String(g.type) : `${String(g.type)}(…)`;
  }
  return '?';
}

function describeAction(action: unknown, where: string, warnings: string[]): string {
  if (typeof action === 'string') return action;
  if (action && typeof action === 'object' && typeof (action as { type?: unknown }).type === 'string') return String((action as { type: string }).type);
  if (typeof action === 'function') {
    const name = (action as { type?: unknown; name?: string }).type ?? (action as { name?: string }).name;
    // Built-ins (assign, emit, raise…) carry their kind in `type`; anything else is an anonymous function.
    if (typeof name === 'string' && name.startsWith('xstate.')) {
      warnings.push(`${where}: inline ${name} action; name it in setup({ actions })`);
      return name;
    }
    warnings.push(`${where}: inline action function; name it in setup({ actions })`);
    return 'inline action';
  }
  return '?';
}

function eventLabel(eventType: string, node: AnyStateNode): string {
  if (eventType === '') return 'always';
  const after = /^xstate\.after\.(.+)\.[^.]+$/.exec(eventType);
  if (after) {
    const delayed = node.after.find((t) => t.eventType === eventType);
    return `after ${String(delayed?.delay ?? after[1])}`;
  }
  if (eventType.startsWith('xstate.done.state.')) return 'done';
  if (eventType.startsWith('xstate.done.actor.')) return `done ${eventType.slice('xstate.done.actor.'.length)}`;
  if (eventType.startsWith('xstate.error.actor.')) return `error ${eventType.slice('xstate.error.actor.'.length)}`;
  return eventType;
}

function pathOf(node: AnyStateNode): string {
  return node.path.join('.');
}

function idOf(node: AnyStateNode): string {
  return node.path.length === 0 ? ROOT_ID : nodeIdFor(node.path);
}

export function generateStatechart(machine: AnyStateMachine): Statechart {
  const warnings: string[] = [];
  const states: Record<string, StateInfo> = {};
  const edgeMap = new Map<string, EdgeInfo>();
  const lines: string[] = ['stateDiagram-v2', ...CLASS_DEFS.map((line) => `  ${line}`)];
  const classLines: string[] = [];
  const root = machine.root;

  const addEdge = (from: string, to: string, label: string): void => {
    const key = `${from} ${to}`;
    const edge = edgeMap.get(key) ?? { from, to, labels: [] };
    edge.labels.push(label);
    edgeMap.set(key, edge);
  };

  const declare = (node: AnyStateNode, indent: string): void => {
    const id = idOf(node);
    const children = Object.values(node.states) as AnyStateNode[];
    const title = node.path.length === 0 ? machine.id : node.key;
    const label = node.type === 'history' ? `${title} (H${node.history === 'deep' ? '*' : ''})` : title;
    if (children.length === 0) {
      lines.push(`${indent}state "${escapeText(label)}" as ${id}`);
    } else {
      lines.push(`${indent}state "${escapeText(label)}" as ${id} {`);
      if (node.type === 'compound' && node.initial) {
        for (const target of node.initial.target) lines.push(`${indent}  [*] --> ${idOf(target)}`);
      }
      children.forEach((child, index) => {
        // Mermaid's `--` splits a composite into concurrent regions.
        if (node.type === 'parallel' && index > 0) lines.push(`${indent}  --`);
        declare(child, `${indent}  `);
      });
      lines.push(`${indent}}`);
    }
    const where = pathOf(node) || machine.id;
    const entry = node.entry.map((action) => describeAction(action, `${where} entry`, warnings));
    const invoked = node.invoke.map((definition) => (typeof definition.src === 'string' ? definition.src : definition.id));
    const descriptions = [...entry.map((name) => `entry / ${name}`), ...invoked.map((src) => `invoke / ${src}`)];
    // A composite's description would be drawn as a separate node, so only leaves carry one.
    if (children.length === 0) for (const text of descriptions) lines.push(`${indent}${id} : ${escapeText(text)}`);
    if (node.type === 'final') lines.push(`${indent}${id} --> [*]`);
    for (const tag of node.tags) if (TAG_CLASSES[tag]) classLines.push(`  class ${id} ${TAG_CLASSES[tag]}`);
    states[pathOf(node)] = {
      path: pathOf(node),
      id,
      key: node.key,
      type: node.type,
      tags: [...node.tags],
      entry: descriptions,
      ...(node.initial ? { initial: node.initial.target.map(pathOf).join(', ') } : {}),
      transitions: [],
    };
  };
  declare(root, '  ');

  const walkTransitions = (node: AnyStateNode): void => {
    const where = pathOf(node) || machine.id;
    const groups: Array<[string, AnyStateNode['always'] & object]> = [...node.transitions.entries()];
    if (node.always && node.always.length > 0) groups.push(['', node.always]);
    for (const [eventType, definitions] of groups) {
      const event = eventLabel(eventType, node);
      definitions.forEach((definition, index) => {
        const site = `${where} on ${event}${definitions.length > 1 ? ` (branch ${index + 1})` : ''}`;
        for (const action of definition.actions) describeAction(action, site, warnings);
        let guard: string | undefined;
        if (definition.guard !== undefined) guard = describeGuard(definition.guard, site, warnings);
        else if (index > 0 && definitions.slice(0, index).every((d) => d.guard !== undefined)) guard = 'else';
        const label = guard === undefined ? event : `${event} [${guard}]`;
        const targets = definition.target ?? [];
        if (targets.length === 0) {
          // Targetless: the machine stays where it is (context or effects only); drawn as a self-loop.
          addEdge(idOf(node), idOf(node), `${label} (stays)`);
          states[pathOf(node)]?.transitions.push({ label, target: '(stays)' });
        }
        for (const target of targets) {
          addEdge(idOf(node), idOf(target), label);
          states[pathOf(node)]?.transitions.push({ label, target: pathOf(target) || machine.id });
        }
      });
    }
    for (const child of Object.values(node.states) as AnyStateNode[]) walkTransitions(child);
  };
  walkTransitions(root);

  const edges = [...edgeMap.values()];
  for (const edge of edges) lines.push(`  ${edge.from} --> ${edge.to} : ${edge.labels.map(escapeText).join('<br/>')}`);
  lines.push(...classLines);

  return { machineId: machine.id, mermaid: `${lines.join('\n')}\n`, rootId: ROOT_ID, states, edges, warnings };
}

/** The class lines that mark one state (and its ancestors) active; appended to the diagram per frame. */
export function activeClassLines(chart: Statechart, path: string): string[] {
  const state = chart.states[path];
  if (!state) return [];
  const ancestors: string[] = [];
  const segments = path === '' ? [] : path.split('.');
  // The root is always active; marking it would tint the whole canvas.
  for (let i = segments.length - 1; i >= 1; i--) {
    const ancestor = chart.states[segments.slice(0, i).join('.')];
    if (ancestor) ancestors.push(ancestor.id);
  }
  return [`class ${state.id} active`, ...(ancestors.length > 0 ? [`class ${ancestors.join(',')} activeAncestor`] : [])];
}
