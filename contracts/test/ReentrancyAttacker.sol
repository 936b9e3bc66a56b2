// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @notice Test-only: forwards calls as its own account and, when paid, tries to re-enter
/// `withdraw()` on the contract that paid it. Records whether the re-entry succeeded.
contract ReentrancyAttacker {
    address public target;
    uint256 public reentries;
    uint256 public reentryFailures;
    uint256 public received;

    function forward(address to, bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = to.call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
        return ret;
    }

    function attack(address target_) external {
        target = target_;
        (bool ok, bytes memory ret) = target_.call(abi.encodeWithSignature("withdraw()"));
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
    }

    receive() external payable {
        received += msg.value;
        if (target != address(0) && reentries + reentryFailures < 3) {
            (bool ok,) = target.call(abi.encodeWithSignature("withdraw()"));
            if (ok) reentries += 1;
            else reentryFailures += 1;
        }
    }
}
