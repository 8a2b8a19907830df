/**
 * Pieces shared by the OpenAPI route definitions.
 */
import { Problem } from '../../shared/index.js';

export function problemContent(description: string) {
  return { description, content: { 'application/problem+json': { schema: Problem } } };
}
