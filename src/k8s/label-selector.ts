/**
 * Label selectors. A Service's `spec.selector` is a map whose pairs must all match
 * ({@link selectorMatches}); kubectl's `-l` takes the set-based syntax of
 * k8s.io/apimachinery's labels.Parse ({@link parseLabelSelector}): `a=b`, `a==b`, `a!=b`,
 * `a in (x,y)`, `a notin (x)`, `a`, `!a`, joined by commas, every key and value held to the
 * label rules of ./names.ts.
 */
import { ErrorCodes, WeftError } from '../errors/index.js';
import { labelValueProblem, qualifiedNameProblem } from './names.js';
import { quote } from './object-validation.js';

/** True when every pair of `selector` is among `labels`. */
export function selectorMatches(
  selector: Readonly<Record<string, string>>,
  labels: Readonly<Record<string, string>>,
): boolean {
  for (const [k, v] of Object.entries(selector)) {
    if (!Object.prototype.hasOwnProperty.call(labels, k) || labels[k] !== v) return false;
  }
  return true;
}

/** The operators of a requirement, as k8s.io/apimachinery's selection package names them. */
export type SelectorOperator = 'Equals' | 'NotEquals' | 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

/** One requirement of a selector: `key OP values`. */
export interface LabelRequirement {
  key: string;
  operator: SelectorOperator;
  /** One value for Equals/NotEquals, one or more for In/NotIn, none for Exists/DoesNotExist. */
  values: string[];
}

/** A parsed selector: every requirement must hold. No requirements: everything matches. */
export interface LabelSelector {
  requirements: LabelRequirement[];
}

/** Longest selector text weft parses (weft's cap; a command line's selector is short). */
export const MAX_SELECTOR_LENGTH = 16 * 1024;

/** True when `labels` meets every requirement (as kube: `!=` and `notin` hold for an absent key). */
export function labelSelectorMatches(sel: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  return sel.requirements.every((r) => {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    const value = has ? labels[r.key] : undefined;
    switch (r.operator) {
      case 'Exists':
        return has;
      case 'DoesNotExist':
        return !has;
      case 'Equals':
      case 'In':
        return has && r.values.includes(value ?? '');
      case 'NotEquals':
      case 'NotIn':
        return !has || !r.values.includes(value ?? '');
    }
    return false;
  });
}

/** A selector as kubectl prints it, e.g. `app=web,tier in (a,b),!canary`. */
export function formatLabelSelector(sel: LabelSelector): string {
  return sel.requirements
    .map((r) => {
      switch (r.operator) {
        case 'Exists':
          return r.key;
        case 'DoesNotExist':
          return `!${r.key}`;
        case 'Equals':
          return `${r.key}=${r.values[0] ?? ''}`;
        case 'NotEquals':
          return `${r.key}!=${r.values[0] ?? ''}`;
        case 'In':
          return `${r.key} in (${r.values.join(',')})`;
        case 'NotIn':
          return `${r.key} notin (${r.values.join(',')})`;
      }
      return '';
    })
    .join(',');
}

type Token =
  | { t: 'id'; v: string; at: number }
  | { t: 'op'; v: '=' | '==' | '!=' | '!' | '(' | ')' | ','; at: number }
  | { t: 'end'; at: number };

// What may stand in a key or value: everything but whitespace and the syntax's own characters;
// the label rules then say whether the word is a valid key or value.
const WORD = /[^\s=!(),]/;

function tokenize(text: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i] ?? '';
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === '=' && text[i + 1] === '=') {
      out.push({ t: 'op', v: '==', at: i });
      i += 2;
    } else if (c === '!' && text[i + 1] === '=') {
      out.push({ t: 'op', v: '!=', at: i });
      i += 2;
    } else if (c === '=' || c === '!' || c === '(' || c === ')' || c === ',') {
      out.push({ t: 'op', v: c, at: i });
      i++;
    } else {
      const start = i;
      while (i < text.length && WORD.test(text[i] ?? '')) i++;
      out.push({ t: 'id', v: text.slice(start, i), at: start });
    }
  }
  out.push({ t: 'end', at: text.length });
  return out;
}

function selectorError(text: string, message: string): WeftError {
  return new WeftError(ErrorCodes.INVALID_ARGUMENT, `label selector ${quote(text)}: ${message}`, {
    object: 'label selector',
  });
}

/**
 * Parses kubectl's `-l` syntax. Throws WEFT_INVALID_ARGUMENT saying what is wrong and where. The
 * empty text is the selector that matches everything.
 */
export function parseLabelSelector(text: string): LabelSelector {
  if (text.length > MAX_SELECTOR_LENGTH) {
    throw selectorError(text, `is longer than ${MAX_SELECTOR_LENGTH} characters`);
  }
  const tokens = tokenize(text);
  let pos = 0;
  const peek = (): Token => tokens[pos] ?? { t: 'end', at: text.length };
  const next = (): Token => tokens[pos++] ?? { t: 'end', at: text.length };
  const describe = (tok: Token) =>
    tok.t === 'end' ? 'the end' : `${quote(tok.v)} at position ${tok.at + 1}`;
  const fail = (message: string) => selectorError(text, message);

  const key = (tok: Token): string => {
    if (tok.t !== 'id') throw fail(`expected a label key, found ${describe(tok)}`);
    const why = qualifiedNameProblem(tok.v);
    if (why) throw fail(`key ${quote(tok.v)} ${why}`);
    return tok.v;
  };
  const value = (tok: Token, k: string): string => {
    // `a=` selects the empty value, as kube's parser allows.
    if (tok.t !== 'id') return '';
    const why = labelValueProblem(tok.v);
    if (why) throw fail(`value ${quote(tok.v)} of key ${quote(k)} ${why}`);
    return tok.v;
  };

  const requirements: LabelRequirement[] = [];
  if (peek().t === 'end') return { requirements };
  for (;;) {
    let tok = next();
    if (tok.t === 'op' && tok.v === '!') {
      requirements.push({ key: key(next()), operator: 'DoesNotExist', values: [] });
    } else {
      const k = key(tok);
      const op = peek();
      if (op.t === 'end' || (op.t === 'op' && op.v === ',')) {
        requirements.push({ key: k, operator: 'Exists', values: [] });
      } else if (op.t === 'op' && (op.v === '=' || op.v === '==' || op.v === '!=')) {
        next();
        const v = peek().t === 'id' ? value(next(), k) : '';
        requirements.push({ key: k, operator: op.v === '!=' ? 'NotEquals' : 'Equals', values: [v] });
      } else if (op.t === 'id' && (op.v === 'in' || op.v === 'notin')) {
        next();
        const open = next();
        if (open.t !== 'op' || open.v !== '(')
          throw fail(`expected "(" after ${op.v}, found ${describe(open)}`);
        const values: string[] = [];
        for (;;) {
          const v = next();
          if (v.t === 'op' && v.v === ')' && values.length === 0)
            throw fail(`the values of ${op.v} for key ${quote(k)} must not be empty`);
          if (v.t !== 'id') throw fail(`expected a value, found ${describe(v)}`);
          values.push(value(v, k));
          const sep = next();
          if (sep.t === 'op' && sep.v === ')') break;
          if (sep.t !== 'op' || sep.v !== ',') throw fail(`expected "," or ")", found ${describe(sep)}`);
        }
        requirements.push({ key: k, operator: op.v === 'in' ? 'In' : 'NotIn', values: [...new Set(values)] });
      } else {
        throw fail(
          `expected "=", "==", "!=", "in", "notin", "," or the end after key ${quote(k)}, found ${describe(op)}`,
        );
      }
    }
    tok = next();
    if (tok.t === 'end') break;
    if (tok.t !== 'op' || tok.v !== ',') throw fail(`expected "," or the end, found ${describe(tok)}`);
    if (peek().t === 'end') throw fail('ends with ","');
  }
  return { requirements };
}
