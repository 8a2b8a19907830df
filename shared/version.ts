/** The kiln version both processes report (agent hello, coordinator welcome, CLI --version). */
export const KILN_VERSION = '0.1.0';
