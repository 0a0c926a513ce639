// Replaced by the conformance runner (issue 3).
console.log('conformance: not wired yet');
